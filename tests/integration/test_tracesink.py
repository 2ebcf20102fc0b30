"""The local OTLP sink: real OTLP/gRPC export in, a capped file and a span tree out."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from shopmesh import traces
from shopmesh.tracesink import SpanFile, serve
from tests.support.inprocess import free_port

pytestmark = pytest.mark.integration


def provider(service: str, port: int) -> TracerProvider:
    tracer_provider = TracerProvider(resource=Resource.create({"service.name": service}))
    exporter = OTLPSpanExporter(endpoint=f"127.0.0.1:{port}", insecure=True)
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    return tracer_provider


def emit_two_service_trace(port: int) -> str:
    """order handles a request and calls payment, which fails; returns the trace id."""
    order, payment = provider("order", port), provider("payment", port)
    with (
        order.get_tracer("t").start_as_current_span("PlaceOrder") as root,
        payment.get_tracer("t").start_as_current_span("charge") as child,
    ):
        child.set_attribute("shop.order_id", "order-42")
        child.set_status(trace.Status(trace.StatusCode.ERROR, "declined"))
    order.shutdown()
    payment.shutdown()
    return f"{root.get_span_context().trace_id:032x}"


async def test_spans_arrive_and_form_one_tree(tmp_path: Path) -> None:
    port, stop = free_port(), asyncio.Event()
    sink = asyncio.create_task(serve(port, tmp_path, stop))
    await asyncio.sleep(0.3)
    try:
        trace_id = await asyncio.to_thread(emit_two_service_trace, port)
    finally:
        stop.set()
        await sink

    spans = traces.find_trace(tmp_path, trace_id)
    assert [(s.service, s.name) for s in spans] == [("order", "PlaceOrder"), ("payment", "charge")]
    assert traces.orphans(spans) == []
    assert [(depth, s.name) for depth, s in traces.tree(spans)] == [
        (0, "PlaceOrder"),
        (1, "charge"),
    ]
    assert spans[1].status == "error"
    assert spans[1].status_message == "declined"
    # Found by the order it carried, and as the newest trace.
    assert traces.find_trace(tmp_path, "order-42") == spans
    assert traces.find_trace(tmp_path, None) == spans


def test_span_files_rotate_and_stay_capped(tmp_path: Path) -> None:
    spans = SpanFile(tmp_path, max_bytes=1000, keep=3)
    for n in range(40):
        span = trace_pb2.Span(trace_id=n.to_bytes(16, "big"), span_id=b"\x01" * 8, name="x" * 300)
        request = ExportTraceServiceRequest(
            resource_spans=[
                trace_pb2.ResourceSpans(scope_spans=[trace_pb2.ScopeSpans(spans=[span])])
            ]
        )
        spans.append(request.SerializeToString())
    spans.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["spans.1.otlp", "spans.2.otlp", "spans.otlp"]
    assert all(p.stat().st_size < 1000 + 400 for p in tmp_path.iterdir())
    # The newest requests survive whole and in order; the oldest were rotated away.
    kept = [int(s.trace_id, 16) for s in traces.read_spans(tmp_path)]
    assert 0 < len(kept) < 40
    assert kept == list(range(40 - len(kept), 40))


def test_a_request_being_written_is_not_read_half(tmp_path: Path) -> None:
    spans = SpanFile(tmp_path)
    request = ExportTraceServiceRequest(
        resource_spans=[
            trace_pb2.ResourceSpans(
                scope_spans=[
                    trace_pb2.ScopeSpans(
                        spans=[trace_pb2.Span(trace_id=b"\x07" * 16, span_id=b"\x01" * 8)]
                    )
                ]
            )
        ]
    ).SerializeToString()
    spans.append(request)
    spans.close()
    with (tmp_path / "spans.otlp").open("ab") as file:  # the next one, cut short
        file.write(len(request).to_bytes(4, "big") + request[:5])
    assert [s.trace_id for s in traces.read_spans(tmp_path)] == ["07" * 16]
