"""Graceful shutdown: NOT_SERVING at once, in-flight calls finish, the process exits 0."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.inventory.main import SPEC
from shopmesh.config import ServiceConfig, default_db_url
from shopmesh.server import Runtime, ServiceSpec, serve
from tests.support.inprocess import free_port

pytestmark = pytest.mark.integration

SLOW = "/test.Slow/Wait"


def with_slow_method(spec: ServiceSpec) -> ServiceSpec:
    """`spec` plus a method that takes a second: a call to be in flight at shutdown."""

    async def wait(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        await asyncio.sleep(1.0)
        return b"done"

    def register(server: grpc.aio.Server, runtime: Runtime) -> None:
        spec.register(server, runtime)
        handler = grpc.unary_unary_rpc_method_handler(wait)
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("test.Slow", {"Wait": handler}),)
        )

    return ServiceSpec(**{**SPEC.__dict__, "register": register})


async def test_stop_turns_health_off_and_lets_in_flight_calls_finish(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    config = ServiceConfig(
        service="inventory",
        instance="inventory-1",
        grpc_addr=address,
        var_dir=tmp_path,
        db_url=default_db_url(tmp_path, "inventory"),
        nats_url="",
        shutdown_grace=5.0,
    )
    started, stop = asyncio.Event(), asyncio.Event()
    server = asyncio.create_task(serve(with_slow_method(SPEC), config, started, stop))
    await asyncio.wait_for(started.wait(), 30)
    async with grpc.aio.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        watch = health.Watch(health_pb2.HealthCheckRequest())
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING

        in_flight = asyncio.ensure_future(channel.unary_unary(SLOW)(b"", timeout=10))
        await asyncio.sleep(0.2)
        stop.set()
        # Health says NOT_SERVING before the in-flight call is done ...
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
        assert not in_flight.done()
        # ... and the call still completes.
        assert await in_flight == b"done"
    await asyncio.wait_for(server, 10)


def test_sigterm_drains_and_exits_zero(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "SHOPMESH_VAR": str(tmp_path),
        "SHOPMESH_GRPC_ADDR": f"127.0.0.1:{port}",
        "SHOPMESH_NATS_URL": "",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "services.inventory"], env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            deadline = time.monotonic() + 60
            while True:
                try:
                    if health.Check(health_pb2.HealthCheckRequest(), timeout=1).status == 1:
                        break
                except grpc.RpcError:
                    pass
                assert time.monotonic() < deadline, "inventory never became SERVING"
                time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
        assert "inventory-1 stopped" in (process.stderr.read() if process.stderr else "")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
