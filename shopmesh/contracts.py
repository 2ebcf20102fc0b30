"""The gRPC contracts of the topology's services, read from the generated modules.

Service ``<name>`` has a contract when ``shop.<name>.v1.<name>_pb2`` exists (the layout of
``proto/shop/<name>/v1/<name>.proto``). The Envoy configs (routes, health check names, the
transcoder's descriptor set) and the mesh-wide reflection server derive from these, so a
new RPC needs no change here. Topology entries without a contract (stand-ins in tests)
are simply not part of the Envoy mesh.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache

from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import FileDescriptor, MethodDescriptor

# Idempotent reads by naming convention (AIP-131/132): the only RPCs safe to retry.
READ_PREFIXES = ("Get", "List")


@dataclass(frozen=True)
class Method:
    name: str
    path: str  # the HTTP/2 :path of a call, /<package>.<Service>/<Method>

    @property
    def is_read(self) -> bool:
        return self.name.startswith(READ_PREFIXES)


@dataclass(frozen=True)
class GrpcService:
    full_name: str  # shop.order.v1.OrderService
    methods: tuple[Method, ...]

    @property
    def prefix(self) -> str:
        return f"/{self.full_name}/"


@dataclass(frozen=True)
class Contract:
    """What one topology service serves: its proto file and gRPC services."""

    service: str
    file: FileDescriptor
    grpc_services: tuple[GrpcService, ...]


def _method(full_service: str, method: MethodDescriptor) -> Method:
    return Method(method.name, f"/{full_service}/{method.name}")


@cache
def contract(service: str) -> Contract | None:
    """The contract of topology service ``service``, or None if it has none."""
    module_name = f"shop.{service.replace('-', '_')}.v1.{service.replace('-', '_')}_pb2"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError:
        return None
    file: FileDescriptor = module.DESCRIPTOR
    services = tuple(
        GrpcService(s.full_name, tuple(_method(s.full_name, m) for m in s.methods))
        for s in file.services_by_name.values()
    )
    return Contract(service, file, services) if services else None


def contracts(services: Iterable[str]) -> list[Contract]:
    """The contracts of ``services`` that have one, in the given order."""
    return [c for c in map(contract, services) if c is not None]


def descriptor_set(files: Iterable[FileDescriptor]) -> descriptor_pb2.FileDescriptorSet:
    """``files`` and everything they import, dependencies first (what Envoy's gRPC-JSON
    transcoder needs to build its pool; no source info, so the output is stable)."""
    out = descriptor_pb2.FileDescriptorSet()
    seen: set[str] = set()

    def add(file: FileDescriptor) -> None:
        if file.name in seen:
            return
        seen.add(file.name)
        for dependency in file.dependencies:
            add(dependency)
        file.CopyToProto(out.file.add())

    for file in files:
        add(file)
    return out
