"""Where the generated Envoy files live and which instances take part in the Envoy mesh."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from shopmesh.contracts import Contract, contract
from shopmesh.topology import LOOPBACK, Instance, Topology

GATEWAY = "gateway"
REFLECTOR = "reflector"
DESCRIPTOR_FILE = "shopmesh.pb"
SPIFFE_PREFIX = "spiffe://shopmesh/"


def spiffe_id(workload: str) -> str:
    """The URI SAN that names a workload (a service, or the gateway) in certificates."""
    return SPIFFE_PREFIX + workload


def sidecar_name(instance: Instance) -> str:
    return f"{instance.name}-sidecar"


@dataclass(frozen=True)
class Layout:
    """File locations and host names for one rendering target.

    The local mesh renders with everything under ``var`` on 127.0.0.1; a container target
    can pass other roots and host names (``hosts``: instance or process name -> host).
    """

    var: Path
    bind: str = LOOPBACK
    hosts: Mapping[str, str] = field(default_factory=dict)

    @property
    def envoy_dir(self) -> Path:
        return self.var / "envoy"

    def config(self, envoy: str) -> Path:
        return self.envoy_dir / f"{envoy}.yaml"

    @property
    def descriptor(self) -> Path:
        return self.envoy_dir / DESCRIPTOR_FILE

    @property
    def pki(self) -> Path:
        return self.var / "pki"

    @property
    def ca(self) -> Path:
        return self.pki / "ca.crt"

    def cert(self, workload: str) -> Path:
        return self.pki / f"{workload}.crt"

    def key(self, workload: str) -> Path:
        return self.pki / f"{workload}.key"

    @property
    def jwks(self) -> Path:
        return self.var / "keys" / "jwks.json"

    def access_log(self, envoy: str) -> Path:
        return self.var / "log" / f"{envoy}.access.log"

    def outlier_log(self, envoy: str) -> Path:
        return self.var / "log" / f"{envoy}.outlier.log"

    def host(self, name: str) -> str:
        return self.hosts.get(name, LOOPBACK)


@dataclass(frozen=True)
class MeshPlan:
    """The instances behind Envoy: those whose service has a contract (and can run)."""

    topology: Topology
    instances: tuple[Instance, ...]

    @classmethod
    def of(
        cls, topology: Topology, runnable: Callable[[Instance], bool] = lambda _: True
    ) -> MeshPlan:
        """Instances that can run and whose service (and each dependency) has a contract."""

        def meshed(inst: Instance) -> bool:
            services = (inst.service, *inst.depends_on)
            return all(contract(s) is not None for s in services) and runnable(inst)

        return cls(topology, tuple(i for i in topology.instances if meshed(i)))

    @property
    def services(self) -> tuple[str, ...]:
        """Services with a contract, in topology order (routed even with no instance up)."""
        return tuple(s for s in self.topology.service_names if contract(s) is not None)

    def contract(self, service: str) -> Contract:
        found = contract(service)
        if found is None:
            raise ValueError(f"{service} has no gRPC contract")
        return found

    def instances_of(self, service: str) -> tuple[Instance, ...]:
        return tuple(i for i in self.instances if i.service == service)

    def has_sidecar(self, instance: Instance) -> bool:
        return instance in self.instances

    def callers_of(self, service: str) -> tuple[str, ...]:
        """Workloads allowed to call ``service``: the gateway and its dependents."""
        dependents = (s.name for s in self.topology.services if service in s.depends_on)
        return (GATEWAY, *dependents)

    @property
    def has_gateway(self) -> bool:
        return bool(self.instances)
