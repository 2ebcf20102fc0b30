"""The mesh-wide reflection and health server that the gateway routes those calls to.

Each service reflects only itself, so ``grpcurl <gateway> list`` would see whichever
service a reflection stream happened to reach. This process reflects every shop service
(from the generated modules, no network), plus health and reflection, and answers
``grpc.health.v1.Health/Check``: the empty name is this process itself (what the gateway
health-checks), a shop service name is SERVING while at least one of its instances is.

    python -m shopmesh.reflector --listen 127.0.0.1:7005 \
        --service user=127.0.0.1:7100 --service payment=127.0.0.1:7400,127.0.0.1:7410
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from collections.abc import Mapping, Sequence

import grpc
from google.rpc import error_details_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from shopmesh import logs
from shopmesh.contracts import contract

log = logging.getLogger(__name__)

# Imported for its descriptors: grpcurl resolves error details (google.rpc.BadRequest)
# through reflection, so the pool must know them.
ERROR_DETAILS = error_details_pb2.DESCRIPTOR.name

PROBE_TIMEOUT = 0.5  # seconds per instance; the whole Check takes at most this long
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class MeshHealth(health_pb2_grpc.HealthServicer):  # type: ignore[misc]
    """Check only: the service's instances are asked in parallel, one SERVING suffices."""

    def __init__(self, instances: Mapping[str, Sequence[str]]) -> None:
        # gRPC service full name -> app addresses of the instances serving it
        self._instances = instances
        self._channels: dict[str, grpc.aio.Channel] = {}

    def _stub(self, address: str) -> health_pb2_grpc.HealthStub:
        if address not in self._channels:
            self._channels[address] = grpc.aio.insecure_channel(address)
        return health_pb2_grpc.HealthStub(self._channels[address])

    async def _probe(self, address: str, service: str) -> bool:
        try:
            reply = await self._stub(address).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=PROBE_TIMEOUT
            )
        except grpc.aio.AioRpcError:
            return False
        return bool(reply.status == SERVING)

    async def Check(
        self,
        request: health_pb2.HealthCheckRequest,
        context: grpc.aio.ServicerContext[
            health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse
        ],
    ) -> health_pb2.HealthCheckResponse:
        if not request.service:
            return health_pb2.HealthCheckResponse(status=SERVING)
        if request.service not in self._instances:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service}")
        addresses = self._instances[request.service]
        results = await asyncio.gather(*(self._probe(a, request.service) for a in addresses))
        return health_pb2.HealthCheckResponse(status=SERVING if any(results) else NOT_SERVING)

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()


def parse_services(specs: Sequence[str]) -> dict[str, list[str]]:
    """``["user=127.0.0.1:7100", "payment"]`` -> topology service -> app addresses."""
    out: dict[str, list[str]] = {}
    for spec in specs:
        name, _, addresses = spec.partition("=")
        out[name] = [a for a in addresses.split(",") if a]
    return out


def instances_by_grpc_name(services: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, addresses in services.items():
        found = contract(name)
        if found is None:
            raise SystemExit(f"{name} has no gRPC contract (shop.{name}.v1.{name}_pb2)")
        for grpc_service in found.grpc_services:
            out[grpc_service.full_name] = list(addresses)
    return out


async def serve(listen: str, services: Mapping[str, Sequence[str]], stop: asyncio.Event) -> None:
    instances = instances_by_grpc_name(services)
    server = grpc.aio.server()
    mesh_health = MeshHealth(instances)
    health_pb2_grpc.add_HealthServicer_to_server(mesh_health, server)
    names = [*instances, health.SERVICE_NAME, reflection.SERVICE_NAME]
    reflection.enable_server_reflection(names, server)
    server.add_insecure_port(listen)
    await server.start()
    log.info("reflecting %s on %s", ", ".join(names), listen)
    try:
        await stop.wait()
    finally:
        await server.stop(1.0)
        await mesh_health.close()


async def _main(listen: str, services: Mapping[str, Sequence[str]]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await serve(listen, services, stop)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="shopmesh.reflector", description=__doc__)
    parser.add_argument("--listen", required=True, help="host:port to serve on")
    parser.add_argument(
        "--service",
        action="append",
        default=[],
        metavar="NAME[=HOST:PORT,...]",
        help="a topology service to reflect, with its instances' app addresses",
    )
    args = parser.parse_args(argv)
    logs.configure("reflector")
    asyncio.run(_main(args.listen, parse_services(args.service)))


if __name__ == "__main__":
    main()
