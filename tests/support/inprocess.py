"""Run a service in the test's own event loop, on a free port with its own database.

Servicer tests use this: a real grpc.aio server and channel, real migrations and a real
SQLite file, and no subprocess to wait for.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc

from shopmesh.config import ServiceConfig, default_db_url
from shopmesh.identity import ROLE_HEADER, USER_ID_HEADER
from shopmesh.server import ServiceSpec, serve


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class RunningService:
    address: str
    channel: grpc.aio.Channel
    config: ServiceConfig


def _config(
    spec: ServiceSpec,
    var_dir: Path,
    upstreams: Mapping[str, str] | None,
    instance: str | None,
    nats_url: str = "",
) -> ServiceConfig:
    return ServiceConfig(
        service=spec.name,
        instance=instance or f"{spec.name}-1",
        grpc_addr=f"127.0.0.1:{free_port()}",
        var_dir=var_dir,
        db_url=default_db_url(var_dir, spec.name),
        nats_url=nats_url,  # empty: no event bus (servicer tests)
        upstreams=dict(upstreams or {}),
        shutdown_grace=1.0,
    )


@contextlib.asynccontextmanager
async def running(
    spec: ServiceSpec,
    var_dir: Path,
    upstreams: Mapping[str, str] | None = None,
    instance: str | None = None,
    nats_url: str = "",
) -> AsyncIterator[RunningService]:
    """Start `spec` in-process; stop it (with drain) when the block ends."""
    config = _config(spec, var_dir, upstreams, instance, nats_url)
    address = config.grpc_addr
    started, stop = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(serve(spec, config, started=started, stop=stop))
    waiter = asyncio.create_task(started.wait())
    done, _ = await asyncio.wait({task, waiter}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        waiter.cancel()
        task.result()  # raises the start-up error
    if waiter not in done:
        stop.set()
        raise TimeoutError(f"{spec.name} did not start within 30 s")
    channel = grpc.aio.insecure_channel(address)
    try:
        yield RunningService(address=address, channel=channel, config=config)
    finally:
        await channel.close()
        stop.set()
        await task


def as_user(user_id: str, role: str = "customer") -> tuple[tuple[str, str], ...]:
    """Metadata the gateway would set for a verified caller."""
    return ((USER_ID_HEADER, user_id), (ROLE_HEADER, role))


@contextlib.contextmanager
def running_in_thread(
    spec: ServiceSpec, var_dir: Path, upstreams: Mapping[str, str] | None = None
) -> Iterator[str]:
    """Serve `spec` on its own event loop in a thread, for synchronous (hypothesis) tests."""
    config = _config(spec, var_dir, upstreams, None)
    loop = asyncio.new_event_loop()
    started, stop = threading.Event(), asyncio.Event()
    failure: list[BaseException] = []

    async def main() -> None:
        ready = asyncio.Event()
        task = asyncio.create_task(serve(spec, config, started=ready, stop=stop))
        await ready.wait()
        started.set()
        await task

    def target() -> None:
        try:
            loop.run_until_complete(main())
        except BaseException as error:  # reported to the test below
            failure.append(error)
            started.set()
        finally:
            loop.close()

    thread = threading.Thread(target=target, name=f"{spec.name}-server", daemon=True)
    thread.start()
    if not started.wait(30) or failure:
        raise RuntimeError(f"{spec.name} did not start") from (failure[0] if failure else None)
    try:
        yield config.grpc_addr
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
