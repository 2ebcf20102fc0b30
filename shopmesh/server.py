"""Run one service instance: migrations, gRPC server, health, reflection, shutdown.

Every service's `main` builds a `ServiceSpec` and calls `run(spec)`. The order of
start-up is the readiness contract: health says SERVING only after migrations ran, the
service's own start-up work finished and every sync dependency answered its health
check; it says NOT_SERVING the moment shutdown starts, before in-flight calls drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from shopmesh import clients, logs, telemetry
from shopmesh.bus import run_bus
from shopmesh.config import ServiceConfig
from shopmesh.db import Database
from shopmesh.events import Subscription
from shopmesh.rpc import ServiceInterceptor
from shopmesh.uow import UnitOfWork

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    """What a running instance has: its config, database and channels to dependencies."""

    config: ServiceConfig
    db: Database
    channels: dict[str, grpc.aio.Channel] = field(default_factory=dict)
    outbox_signal: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    # Full gRPC service names served (for health and reflection).
    grpc_services: Sequence[str]
    migrations: Path
    # Register the servicers on the server.
    register: Callable[[grpc.aio.Server, Runtime], None]
    # Sync dependencies, by service name (topology.yaml's depends_on).
    dependencies: Sequence[str] = ()
    # Work to do once before serving, for example seeding a catalogue.
    on_start: Callable[[Runtime], Awaitable[None]] | None = None
    # The events this service consumes and their handlers (services/<name>/events.py).
    subscriptions: Callable[[Runtime], Sequence[Subscription]] | None = None
    # The unit of work the bus opens around each handler.
    unit_of_work: type[UnitOfWork] = UnitOfWork


async def wait_until_serving(channel: grpc.aio.Channel, name: str, timeout: float) -> None:
    """Poll a dependency's health until SERVING; raise TimeoutError after `timeout`."""
    stub = health_pb2_grpc.HealthStub(channel)
    loop = asyncio.get_running_loop()
    give_up = loop.time() + timeout
    delay = 0.05
    while True:
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.aio.AioRpcError:
            pass
        if loop.time() > give_up:
            raise TimeoutError(f"dependency {name} not SERVING after {timeout:.0f}s")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 1.0)


async def serve(
    spec: ServiceSpec,
    config: ServiceConfig,
    started: asyncio.Event | None = None,
    stop: asyncio.Event | None = None,
    *,
    drain_signals: bool = False,
) -> None:
    """Serve until `stop` is set; `started` is set once SERVING.

    With `drain_signals` (a real process, not a test), SIGUSR1 takes the instance out of
    rotation (health NOT_SERVING, calls still answered) and SIGUSR2 puts it back.
    """
    stop = stop or asyncio.Event()
    runtime = Runtime(config=config, db=Database(config.db_url))
    for dependency in spec.dependencies:
        runtime.channels[dependency] = clients.channel(config.upstream(dependency))

    # One interceptor: span, validation, errors, metric and log line (shopmesh.rpc).
    server = grpc.aio.server(interceptors=[ServiceInterceptor()])
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    spec.register(server, runtime)
    reflection.enable_server_reflection(
        [*spec.grpc_services, health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )
    for name in ("", *spec.grpc_services):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    port = server.add_insecure_port(config.grpc_addr)
    await server.start()
    log.info("%s listening on port %d (not serving yet)", config.instance, port)

    bus: asyncio.Task[None] | None = None
    try:
        await runtime.db.migrate(spec.migrations)
        if spec.on_start is not None:
            await spec.on_start(runtime)
        for name, channel in runtime.channels.items():
            await wait_until_serving(channel, name, timeout=60)
        bus = start_bus(spec, runtime, stop)
        for name in ("", *spec.grpc_services):
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("%s serving", config.instance)
        if drain_signals:
            _toggle_health_on_signals(health_servicer, ("", *spec.grpc_services))
        if started is not None:
            started.set()
        await stop.wait()
    finally:
        log.info("%s draining (grace %.1fs)", config.instance, config.shutdown_grace)
        await health_servicer.enter_graceful_shutdown()
        await server.stop(config.shutdown_grace)
        if bus is not None:
            bus.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await bus
        for channel in runtime.channels.values():
            await channel.close()
        await runtime.db.dispose()
        log.info("%s stopped", config.instance)


def _toggle_health_on_signals(servicer: health.aio.HealthServicer, names: Sequence[str]) -> None:
    async def set_all(status: int) -> None:
        for name in names:
            await servicer.set(name, status)
        log.info("health %s", health_pb2.HealthCheckResponse.ServingStatus.Name(status))

    loop = asyncio.get_running_loop()
    pending: set[asyncio.Task[None]] = set()  # keep the tasks referenced until done

    def on_signal(status: int) -> None:
        task = loop.create_task(set_all(status))
        pending.add(task)
        task.add_done_callback(pending.discard)

    loop.add_signal_handler(signal.SIGUSR1, on_signal, health_pb2.HealthCheckResponse.NOT_SERVING)
    loop.add_signal_handler(signal.SIGUSR2, on_signal, health_pb2.HealthCheckResponse.SERVING)


def start_bus(
    spec: ServiceSpec, runtime: Runtime, stop: asyncio.Event
) -> asyncio.Task[None] | None:
    """Relay the outbox and run the consumers in the background (none without NATS)."""
    config = runtime.config
    if not config.nats_url:
        return None
    subscriptions = spec.subscriptions(runtime) if spec.subscriptions else []
    task = asyncio.create_task(
        run_bus(
            config.nats_url,
            config.instance,
            runtime.db,
            runtime.outbox_signal,
            subscriptions,
            lambda: spec.unit_of_work.for_runtime(runtime),
        ),
        name=f"{config.instance}-bus",
    )

    def on_done(done: asyncio.Task[None]) -> None:
        # A process whose bus died must not look healthy: stop it, the runner reports it.
        if not done.cancelled() and done.exception() is not None:
            log.error("event bus failed; stopping", exc_info=done.exception())
            stop.set()

    task.add_done_callback(on_done)
    return task


def run(spec: ServiceSpec) -> None:
    """Entry point of `python -m services.<name>`."""
    config = ServiceConfig.from_env(spec.name)
    logs.configure(config.instance)
    shutdown_telemetry = telemetry.configure(spec.name, config.instance)
    try:
        asyncio.run(_serve_until_signalled(spec, config))
    finally:
        shutdown_telemetry()


async def _serve_until_signalled(spec: ServiceSpec, config: ServiceConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await serve(spec, config, stop=stop, drain_signals=True)
