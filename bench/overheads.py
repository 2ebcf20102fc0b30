"""`python -m bench.overheads`: the CPU each per-call layer of a service costs.

Every gRPC call a service answers passes through the same layers before and after its
handler: the server span, request validation, the error mapping, the RPC metric and
the log line; every call it makes to a dependency goes through the client span. This
measures each one alone on top of a bare grpc.aio unary server, and the stack `serve`
installs, in the same run, so the ratios hold on a busy machine.

One server process per configuration (this script with `serve`), all started at once on
free loopback ports; the handler answers from prebuilt responses, so what is measured
is the layers, not a database. The driver (this process) sends N calls, C in flight, of
`OrderService/PlaceOrder` (two lines, so protovalidate runs its CEL rule) and of
`InventoryService/GetProduct`, with the metadata the gateway sends (a sampled W3C
traceparent and the caller's identity), and reads each server's CPU time (all threads:
the span exporter's too) from the start of its calls to the start of its next ones, the
other servers' turns in between, so that the export of the spans, half a second later,
is counted with the calls that made them. Client layers are measured in
a caller process (`call`) against the bare server, from its own CPU time (with the
export of its spans): `client-bare` calls the stub directly, the others through
`shopmesh.clients.call` as the services do. The spans and
metrics go over OTLP to a sink in the driver that answers without decoding them.
Configurations take turns, `--rounds` times; a figure is the median of its rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import logging
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import psutil
from opentelemetry import metrics, trace
from opentelemetry.instrumentation.grpc import (
    aio_client_interceptors,
    aio_server_interceptor,
    filters,
)
from shop.common.v1 import common_pb2
from shop.inventory.v1 import inventory_pb2 as inv
from shop.order.v1 import order_pb2 as order

from shopmesh import clients, logs, rpc, telemetry
from shopmesh.identity import ROLE_HEADER, USER_ID_HEADER, service_metadata

PLACE = "/shop.order.v1.OrderService/PlaceOrder"
GET = "/shop.inventory.v1.InventoryService/GetProduct"
METHODS = (PLACE, GET)
HEALTH = "grpc.health.v1.Health"
# Seconds a span waits in the BatchSpanProcessor (shopmesh.telemetry), and some.
EXPORT_DELAY = 1.0
USER_ID = "3f0c7c7e-8f3e-4c55-9f55-4e8c0b6d2a11"

# Server configurations: one layer each on a bare server, then the whole stack, and the
# stack for callers whose trace is not sampled (`-unsampled`: traceparent flags 00).
SERVER_LAYERS = (
    "bare",
    "noop-interceptor",
    "validation",
    "log-line",
    "metric",
    "span-otel-lib",
    "span",
    "stack",
    "stack-unsampled",
)
# Caller configurations, against the bare server.
CLIENT_LAYERS = ("client-bare", "client-noop-interceptor", "client-otel-lib", "client")

UnaryHandler = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]


# -- the requests and responses ----------------------------------------------------------


def place_request() -> order.PlaceOrderRequest:
    return order.PlaceOrderRequest(
        idempotency_key=f"bench-{secrets.token_hex(8)}",
        lines=[
            order.OrderLineInput(product_id="sku-espresso", quantity=2),
            order.OrderLineInput(product_id="sku-mug", quantity=1),
        ],
    )


def get_request() -> inv.GetProductRequest:
    return inv.GetProductRequest(product_id="sku-espresso")


def _money(minor: int) -> common_pb2.Money:
    return common_pb2.Money(amount_minor=minor, currency="EUR")


def place_response() -> order.PlaceOrderResponse:
    lines = [
        order.OrderLine(
            product_id="sku-espresso",
            name="Espresso beans",
            quantity=2,
            unit_price=_money(1290),
            line_total=_money(2580),
        ),
        order.OrderLine(
            product_id="sku-mug",
            name="Mug",
            quantity=1,
            unit_price=_money(1200),
            line_total=_money(1200),
        ),
    ]
    placed = order.Order(
        order_id="9762a4b8-e14a-4170-9966-0cc248835aee",
        user_id=USER_ID,
        status=order.ORDER_STATUS_PENDING,
        lines=lines,
        total=_money(3780),
        idempotency_key="bench-0000000000000000",
        timeline=[order.TimelineEntry(step="placed", status=order.ORDER_STATUS_PENDING)],
    )
    placed.created_at.GetCurrentTime()
    placed.updated_at.GetCurrentTime()
    return order.PlaceOrderResponse(order=placed)


def get_response() -> inv.GetProductResponse:
    return inv.GetProductResponse(
        product=inv.Product(
            product_id="sku-espresso",
            name="Espresso beans",
            description="1 kg, whole beans",
            price=_money(1290),
            available=120,
        )
    )


# -- the server side ---------------------------------------------------------------------


def _handlers() -> grpc.GenericRpcHandler:
    replies = {PLACE: place_response(), GET: get_response()}

    def answer(reply: Any) -> UnaryHandler:
        async def handler(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            return reply

        return handler

    def method(name: str, request_cls: Any) -> grpc.RpcMethodHandler:
        return grpc.unary_unary_rpc_method_handler(
            answer(replies[name]),
            request_deserializer=request_cls.FromString,
            response_serializer=type(replies[name]).SerializeToString,
        )

    by_service: dict[str, dict[str, grpc.RpcMethodHandler]] = {
        "shop.order.v1.OrderService": {"PlaceOrder": method(PLACE, order.PlaceOrderRequest)},
        "shop.inventory.v1.InventoryService": {"GetProduct": method(GET, inv.GetProductRequest)},
    }

    class Handlers(grpc.GenericRpcHandler):  # type: ignore[misc]
        def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
            service, _, name = details.method.lstrip("/").partition("/")
            return by_service.get(service, {}).get(name)

    return Handlers()


# Runs one call: (method, the handler, request, context) -> response.
Around = Callable[[str, UnaryHandler, Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]


async def _through(
    method: str, inner: UnaryHandler, request: Any, context: grpc.aio.ServicerContext[Any, Any]
) -> Any:
    return await inner(request, context)


class _OneLayer(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """An interceptor that runs each unary call through `around`: one layer alone, with
    the plumbing any interceptor costs (`noop-interceptor` measures that by itself)."""

    def __init__(self, around: Around = _through, note_nul: bool = False) -> None:
        self.around, self.note_nul = around, note_nul

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        inner: UnaryHandler = handler.unary_unary
        method: str = details.method
        around = self.around

        async def wrapped(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            return await around(method, inner, request, context)

        deserializer = handler.request_deserializer
        return grpc.unary_unary_rpc_method_handler(
            wrapped,
            request_deserializer=rpc.noting_nul(deserializer) if self.note_nul else deserializer,
            response_serializer=handler.response_serializer,
        )


async def _validated(
    method: str, inner: UnaryHandler, received: Any, context: grpc.aio.ServicerContext[Any, Any]
) -> Any:
    """Validation as `rpc.ServiceInterceptor` does it (the NUL walk only when needed)."""
    request, may_hold_nul = received
    invalid = rpc.bad_request(request, may_hold_nul=may_hold_nul)
    if invalid is not None:
        await rpc.abort_with(context, invalid)
    return await inner(request, context)


def _after(record: Callable[[str, float], None]) -> Around:
    """A layer that runs once the call is answered, with the method and the time taken."""

    async def around(
        method: str, inner: UnaryHandler, request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> Any:
        started = time.perf_counter()
        try:
            return await inner(request, context)
        finally:
            record(method, (time.perf_counter() - started) * 1000)

    return around


def _lean_span() -> Around:
    """The server span `rpc.ServiceInterceptor` opens (shopmesh.telemetry), alone."""
    spans: dict[str, telemetry.ServerSpans] = {}
    tracer = telemetry.tracer()

    async def around(
        method: str, inner: UnaryHandler, request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> Any:
        of_method = spans.get(method) or spans.setdefault(
            method, telemetry.ServerSpans(method, tracer)
        )
        span, token = of_method.start(context.invocation_metadata())
        try:
            return await inner(request, context)
        finally:
            code = context.code() or grpc.StatusCode.OK
            of_method.end(span, token, code, context.details())

    return around


def _interceptors(layer: str) -> list[Any]:
    if layer == "bare":
        return []
    if layer == "noop-interceptor":
        return [_OneLayer()]
    if layer == "validation":
        return [_OneLayer(_validated, note_nul=True)]
    if layer == "log-line":
        log = logging.getLogger("shopmesh.rpc")
        return [_OneLayer(_after(lambda method, ms: log.info("%s %s %.1fms", method, "OK", ms)))]
    if layer == "metric":
        histogram = metrics.get_meter("bench").create_histogram("rpc.server.duration", unit="ms")
        labels = {"rpc.grpc.status_code": 0}
        return [
            _OneLayer(
                _after(lambda method, ms: histogram.record(ms, {**labels, "rpc.method": method}))
            )
        ]
    if layer == "span-otel-lib":
        return [aio_server_interceptor(filter_=filters.negate(filters.service_name(HEALTH)))]
    if layer == "span":
        return [_OneLayer(_lean_span())]
    if layer in ("stack", "stack-unsampled"):
        return [rpc.ServiceInterceptor()]  # what shopmesh.server.serve installs
    raise ValueError(f"unknown layer {layer}")


async def _serve(layer: str) -> None:
    server = grpc.aio.server(interceptors=_interceptors(layer))
    server.add_generic_rpc_handlers((_handlers(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(f"port {port}", flush=True)
    # Serve until the driver closes our stdin.
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await server.stop(0)


def _configure(instance: str) -> Callable[[], None]:
    """Logs and telemetry as a service configures them (stderr goes to a file)."""
    logs.configure(instance)
    return telemetry.configure("bench", instance)


# -- the client side ---------------------------------------------------------------------


async def _call_many(
    send: Callable[[], Awaitable[Any]], calls: int, concurrency: int, timeout: float
) -> None:
    remaining = itertools.count()

    async def worker() -> None:
        while next(remaining) < calls:
            await send()

    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(concurrency))), timeout)


class _NoopClient(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """What grpc.aio's interceptor machinery costs a call by itself."""

    async def intercept_unary_unary(
        self, continuation: Callable[..., Awaitable[Any]], details: Any, request: Any
    ) -> Any:
        return await continuation(details, request)


async def _caller(layer: str, target: str, calls: int, concurrency: int) -> float:
    """CPU seconds this process spends on `calls` GetProduct calls through `layer`."""
    if layer == "client-otel-lib":
        interceptors = aio_client_interceptors(filter_=filters.negate(filters.service_name(HEALTH)))
        channel = grpc.aio.insecure_channel(target, interceptors=interceptors)
    elif layer == "client-noop-interceptor":
        channel = grpc.aio.insecure_channel(target, interceptors=[_NoopClient()])
    elif layer == "client":
        channel = clients.channel(target)  # what shopmesh.server.serve makes
    else:
        channel = grpc.aio.insecure_channel(target)
    stub = channel.unary_unary(
        GET,
        request_serializer=inv.GetProductRequest.SerializeToString,
        response_deserializer=inv.GetProductResponse.FromString,
    )
    request = get_request()

    async def send() -> None:
        if layer == "client-bare":
            await stub(request, timeout=2.0, metadata=service_metadata("order-1"))
        else:
            await clients.call(
                "inventory", stub, request, instance="order-1", context=None, timeout=2.0
            )

    # Outgoing calls happen inside a server span: the client span is its child.
    trace_provider: Any = trace.get_tracer_provider()
    tracer = trace_provider.get_tracer("bench")
    async with channel:
        with tracer.start_as_current_span("parent", kind=trace.SpanKind.SERVER):
            await _call_many(send, min(calls // 5, 200), concurrency, 60)
            trace_provider.force_flush()
            started = time.process_time()
            await _call_many(send, calls, concurrency, 120)
    # The spans' export is part of their cost.
    trace_provider.force_flush()
    return time.process_time() - started


# -- the driver --------------------------------------------------------------------------


@dataclass
class Server:
    layer: str
    process: subprocess.Popen[str]
    port: int

    def cpu(self) -> float:
        """CPU seconds of all the process's threads, to the nanosecond where Linux tells
        (schedstat); psutil's user + system counts clock ticks of 10 ms."""
        try:
            tasks = Path(f"/proc/{self.process.pid}/task")
            return sum(int((t / "schedstat").read_text().split()[0]) for t in tasks.iterdir()) / 1e9
        except (OSError, ValueError):
            times = psutil.Process(self.process.pid).cpu_times()
            return float(times.user + times.system)


async def _sink() -> tuple[grpc.aio.Server, int, list[int]]:
    """An OTLP receiver that answers every export with an empty response."""
    received = [0]

    async def export(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        received[0] += 1
        return b""

    class Sink(grpc.GenericRpcHandler):  # type: ignore[misc]
        def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
            return grpc.unary_unary_rpc_method_handler(export)

    server = grpc.aio.server()
    server.add_generic_rpc_handlers((Sink(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port, received


def _env(sink_port: int) -> dict[str, str]:
    env = dict(os.environ)
    env["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{sink_port}"
    env.pop("OTEL_METRICS_EXPORTER", None)
    env["no_proxy"] = env["NO_PROXY"] = "127.0.0.1,localhost"
    return env


@contextlib.contextmanager
def _servers(layers: Sequence[str], sink_port: int, log_dir: Path) -> Iterator[dict[str, Server]]:
    started: dict[str, Server] = {}
    processes: list[subprocess.Popen[str]] = []
    try:
        for layer in layers:
            log_file = (log_dir / f"{layer}.log").open("w")
            process = subprocess.Popen(
                [sys.executable, "-m", "bench.overheads", "serve", layer],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log_file,
                text=True,
                env=_env(sink_port),
            )
            log_file.close()
            processes.append(process)
        for layer, process in zip(layers, processes, strict=True):
            assert process.stdout is not None
            line = process.stdout.readline()  # the child exits (EOF) if it fails
            if not line.startswith("port "):
                raise RuntimeError(f"{layer} server did not start; see {log_dir}/{layer}.log")
            started[layer] = Server(layer, process, int(line.split()[1]))
        yield started
    finally:
        for process in processes:
            with contextlib.suppress(OSError):
                if process.stdin is not None:
                    process.stdin.close()
        for process in processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


async def _drive(server: Server, method: str, calls: int, concurrency: int) -> None:
    """`calls` calls of `method`, `concurrency` at a time, as the gateway sends them."""
    request = (place_request() if method == PLACE else get_request()).SerializeToString()
    # A trace context (a new parent span per call, sampled but for `-unsampled` layers)
    # and the verified caller.
    flags = "00" if server.layer.endswith("-unsampled") else "01"
    parents = [f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-{flags}" for _ in range(512)]
    turn = itertools.cycle(parents)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = channel.unary_unary(method)

        async def send() -> None:
            metadata = (
                ("traceparent", next(turn)),
                (USER_ID_HEADER, USER_ID),
                (ROLE_HEADER, "customer"),
            )
            await stub(request, timeout=5.0, metadata=metadata)

        await _call_many(send, calls, concurrency, 120)


def _caller_cpu(layer: str, port: int, sink_port: int, calls: int, concurrency: int) -> float:
    """Caller CPU microseconds per call, from a caller process of its own."""
    command = [sys.executable, "-m", "bench.overheads", "call", layer, f"127.0.0.1:{port}"]
    command += [f"--calls={calls}", f"--concurrency={concurrency}"]
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        env=_env(sink_port),
        timeout=180,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{layer} caller failed: {done.stderr[-2000:]}")
    return float(done.stdout.split()[-1]) / calls * 1e6


@dataclass
class Result:
    layer: str
    method: str
    us: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.us)


async def measure(calls: int, rounds: int, concurrency: int) -> list[Result]:
    sink, sink_port, exports = await _sink()
    results = {
        (layer, method): Result(layer, method, []) for layer in SERVER_LAYERS for method in METHODS
    }
    results.update({(layer, GET): Result(layer, GET, []) for layer in CLIENT_LAYERS})
    try:
        with (
            tempfile.TemporaryDirectory(prefix="shopmesh-overheads-") as tmp,
            _servers(SERVER_LAYERS, sink_port, Path(tmp)) as servers,
        ):
            for layer, method in itertools.product(SERVER_LAYERS, METHODS):
                await _drive(servers[layer], method, min(calls // 5, 200), concurrency)
            # A window runs from the start of a server's calls to the start of its next
            # ones (the other servers take their turns in between), so the spans it
            # exports 0.5 s later are counted with the calls that made them.
            await asyncio.sleep(EXPORT_DELAY)
            for number in range(rounds):
                print(f"round {number + 1}/{rounds}", file=sys.stderr, flush=True)
                windows: dict[str, tuple[Result, float]] = {}
                for method, layer in itertools.product(METHODS, SERVER_LAYERS):
                    server = servers[layer]
                    now = server.cpu()
                    if layer in windows:
                        result, began = windows[layer]
                        result.us.append((now - began) / calls * 1e6)
                    windows[layer] = (results[(layer, method)], now)
                    await _drive(server, method, calls, concurrency)
                await asyncio.sleep(EXPORT_DELAY)
                for layer, (result, began) in windows.items():
                    result.us.append((servers[layer].cpu() - began) / calls * 1e6)
                # The callers load the bare server: after its windows are closed.
                for layer in CLIENT_LAYERS:
                    run = asyncio.to_thread(
                        _caller_cpu, layer, servers["bare"].port, sink_port, calls, concurrency
                    )
                    results[(layer, GET)].us.append(await run)
    finally:
        await sink.stop(0)
    if exports[0] == 0:
        raise RuntimeError("no OTLP export reached the sink: spans were not measured")
    return list(results.values())


def table(results: Sequence[Result]) -> str:
    """A markdown table: us per call, and the difference and ratio against bare."""
    by = {(r.layer, r.method): r.median for r in results}
    rows = [
        "| layer | PlaceOrder us | + us | x bare | GetProduct us | + us | x bare |",
        "|---|---|---|---|---|---|---|",
    ]
    for layer in SERVER_LAYERS:
        cells = [layer]
        for method in METHODS:
            us, bare = by[(layer, method)], by[("bare", method)]
            cells += [f"{us:.0f}", f"{us - bare:+.0f}", f"{us / bare:.2f}"]
        rows.append("| " + " | ".join(cells) + " |")
    rows += [
        "",
        "| caller (GetProduct) | us | + us | x bare |",
        "|---|---|---|---|",
    ]
    bare = by[("client-bare", GET)]
    for layer in CLIENT_LAYERS:
        us = by[(layer, GET)]
        rows.append(f"| {layer} | {us:.0f} | {us - bare:+.0f} | {us / bare:.2f} |")
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve", help="(internal) one server configuration")
    serve.add_argument("layer", choices=SERVER_LAYERS)
    call = sub.add_parser("call", help="(internal) one caller configuration")
    call.add_argument("layer", choices=CLIENT_LAYERS)
    call.add_argument("target")
    for command in (parser, call):
        command.add_argument("--calls", type=int, default=1500)
        command.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="300 calls, one round")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)

    if args.command == "serve":
        shutdown = _configure(f"bench-{args.layer}")
        try:
            asyncio.run(_serve(args.layer))
        finally:
            shutdown()
        return
    if args.command == "call":
        shutdown = _configure(f"caller-{args.layer}")
        try:
            cpu = asyncio.run(_caller(args.layer, args.target, args.calls, args.concurrency))
        finally:
            shutdown()
        print(f"cpu {cpu}")
        return

    calls, rounds = (300, 1) if args.quick else (args.calls, args.rounds)
    load = os.getloadavg()[0]
    began = time.monotonic()
    results = asyncio.run(measure(calls, rounds, args.concurrency))
    print(
        f"\nCPU microseconds per call (median of {rounds} rounds of {calls} calls, "
        f"{args.concurrency} in flight; load average {load:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after, {time.monotonic() - began:.0f} s)\n"
    )
    print(table(results))
    if args.json:
        figures = [{"layer": r.layer, "method": r.method, "us": r.us} for r in results]
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
