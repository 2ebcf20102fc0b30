"""What every call a service answers leaves behind: a span, a metric, a log line.

A real grpc.aio server with `shopmesh.rpc.ServiceInterceptor` in front of one shop
method, and a client through `shopmesh.telemetry.client_interceptors`, both with
tracer and meter providers of the test's own (in memory), so nothing global is touched.
"""

from __future__ import annotations

import io
import json
import logging
import secrets
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from shop.order.v1 import order_pb2 as pb

from shopmesh import errors, logs, telemetry
from shopmesh.rpc import ServiceInterceptor
from tests.support.errors import field_violations

pytestmark = pytest.mark.unit

METHOD = "/shop.order.v1.OrderService/CancelOrder"


async def cancel(request: pb.CancelOrderRequest, context: Any) -> pb.CancelOrderResponse:
    """What the reason says: an answer, a domain error or a bug."""
    if request.reason == "bug":
        raise RuntimeError("a bug")
    if request.reason == "gone":
        raise errors.NotFound(f"no order {request.order_id}")
    return pb.CancelOrderResponse(order=pb.Order(order_id=request.order_id))


class Handlers(grpc.GenericRpcHandler):  # type: ignore[misc]
    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        if details.method != METHOD:
            return None
        return grpc.unary_unary_rpc_method_handler(
            cancel,
            request_deserializer=pb.CancelOrderRequest.FromString,
            response_serializer=pb.CancelOrderResponse.SerializeToString,
        )


@dataclass
class Service:
    spans: InMemorySpanExporter
    metrics: InMemoryMetricReader
    log: io.StringIO
    traced: grpc.aio.UnaryUnaryMultiCallable  # through the client interceptor
    plain: grpc.aio.UnaryUnaryMultiCallable  # as Envoy calls: traceparent or none

    def finished(self, kind: SpanKind) -> list[ReadableSpan]:
        return [s for s in self.spans.get_finished_spans() if s.kind == kind]

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log.getvalue().splitlines()]


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """The per-call lines, formatted as a service formats them (inside the span)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter("order-1"))
    logger = logging.getLogger("shopmesh.rpc")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    yield stream
    logger.removeHandler(handler)
    logger.setLevel(level)


@pytest.fixture
async def service(log_lines: io.StringIO) -> AsyncIterator[Service]:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    server = grpc.aio.server(
        interceptors=[ServiceInterceptor(tracer_provider, MeterProvider(metric_readers=[reader]))]
    )
    server.add_generic_rpc_handlers((Handlers(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    target = f"127.0.0.1:{port}"
    traced = grpc.aio.insecure_channel(
        target, interceptors=telemetry.client_interceptors(tracer_provider)
    )
    plain = grpc.aio.insecure_channel(target)

    def stub(channel: grpc.aio.Channel) -> grpc.aio.UnaryUnaryMultiCallable:
        return channel.unary_unary(
            METHOD,
            request_serializer=pb.CancelOrderRequest.SerializeToString,
            response_deserializer=pb.CancelOrderResponse.FromString,
        )

    try:
        yield Service(spans, reader, log_lines, stub(traced), stub(plain))
    finally:
        await traced.close()
        await plain.close()
        await server.stop(0)


def parent(sampled: bool = True) -> tuple[int, int, str]:
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    flags = "01" if sampled else "00"
    return int(trace_id, 16), int(span_id, 16), f"00-{trace_id}-{span_id}-{flags}"


def request(reason: str = "changed my mind") -> pb.CancelOrderRequest:
    return pb.CancelOrderRequest(order_id=str(uuid.uuid4()), reason=reason)


async def test_a_call_is_a_server_span_under_the_callers_context(service: Service) -> None:
    trace_id, span_id, header = parent()
    await service.plain(request(), metadata=(("traceparent", header),))

    (span,) = service.finished(SpanKind.SERVER)
    assert span.name == METHOD
    assert span.context is not None
    assert span.context.trace_id == trace_id
    assert span.parent is not None
    assert span.parent.span_id == span_id
    assert span.parent.is_remote
    assert dict(span.attributes or {}) == {
        "rpc.system": "grpc",
        "rpc.service": "shop.order.v1.OrderService",
        "rpc.method": "CancelOrder",
        "rpc.grpc.status_code": 0,
    }
    assert span.status.status_code is StatusCode.UNSET

    (line,) = service.lines()
    assert line["msg"].startswith(f"{METHOD} OK ")
    assert line["trace_id"] == f"{trace_id:032x}"
    assert line["span_id"] == f"{span.context.span_id:016x}"


async def test_an_unsampled_caller_gets_no_span_but_its_trace_id_in_the_log(
    service: Service,
) -> None:
    trace_id, _, header = parent(sampled=False)
    await service.plain(request(), metadata=(("traceparent", header),))
    assert service.finished(SpanKind.SERVER) == []
    (line,) = service.lines()
    assert line["trace_id"] == f"{trace_id:032x}"


async def test_without_a_caller_context_the_call_starts_a_trace(service: Service) -> None:
    await service.plain(request())
    (span,) = service.finished(SpanKind.SERVER)
    assert span.parent is None


async def test_the_client_span_is_the_parent_of_the_server_span(service: Service) -> None:
    await service.traced(request())
    (client,) = service.finished(SpanKind.CLIENT)
    (server,) = service.finished(SpanKind.SERVER)
    assert client.name == METHOD
    assert client.context is not None
    assert server.parent is not None
    assert server.parent.span_id == client.context.span_id
    assert client.attributes is not None
    assert client.attributes["rpc.grpc.status_code"] == 0
    assert client.status.status_code is StatusCode.UNSET


async def test_invalid_input_is_invalid_argument_with_each_field_and_no_span_error(
    service: Service,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await service.traced(pb.CancelOrderRequest(order_id="nope", reason="x" * 201))
    assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(failed.value)) == {"order_id", "reason"}

    (server,) = service.finished(SpanKind.SERVER)
    assert server.attributes is not None
    assert server.attributes["rpc.grpc.status_code"] == 3
    # The caller's mistake, not the server's; for the caller any failure is an error.
    assert server.status.status_code is StatusCode.UNSET
    (client,) = service.finished(SpanKind.CLIENT)
    assert client.status.status_code is StatusCode.ERROR
    assert [line["msg"].split()[1] for line in service.lines()] == ["INVALID_ARGUMENT"]


@pytest.mark.parametrize(
    ("message", "fields"),
    [
        (request("no\x00thanks"), {"reason"}),
        (pb.CancelOrderRequest(order_id="nope", reason="\x00"), {"order_id", "reason"}),
    ],
)
async def test_a_nul_character_is_invalid_argument(
    service: Service, message: pb.CancelOrderRequest, fields: set[str]
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await service.plain(message)
    assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    violations = field_violations(failed.value)
    assert set(violations) == fields
    assert violations["reason"] == "must not contain NUL characters [shopmesh.no_nul]"


async def test_domain_errors_and_bugs_become_codes_and_bugs_mark_the_span(
    service: Service,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await service.plain(request("gone"))
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as bug:
        await service.plain(request("bug"))
    assert bug.value.code() == grpc.StatusCode.INTERNAL
    assert "a bug" not in (bug.value.details() or "")

    not_found, internal = service.finished(SpanKind.SERVER)
    assert not_found.status.status_code is StatusCode.UNSET
    assert internal.status.status_code is StatusCode.ERROR
    assert [event.name for event in internal.events] == ["exception"]
    codes = [line["msg"].split()[1] for line in service.lines() if line["level"] == "info"]
    assert codes == ["NOT_FOUND", "INTERNAL"]


async def test_every_call_is_counted_by_method_and_code(service: Service) -> None:
    await service.plain(request())
    await service.plain(request())
    with pytest.raises(grpc.aio.AioRpcError):
        await service.plain(request("gone"))

    data = service.metrics.get_metrics_data()
    assert data is not None
    counts: dict[tuple[str, int], int] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name != "rpc.server.duration":
                    continue
                for point in metric.data.data_points:
                    labels: dict[str, Any] = dict(point.attributes or {})
                    key = (labels["rpc.method"], labels["rpc.grpc.status_code"])
                    counts[key] = point.count  # type: ignore[union-attr]
    assert counts == {(METHOD, 0): 2, (METHOD, 5): 1}
