"""The local OTLP sink: real OTLP/gRPC export in, JSON lines and a span tree out."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
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
    record = {"trace_id": "t", "padding": "x" * 300}
    for _ in range(40):
        spans.append([record])
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["spans.1.jsonl", "spans.2.jsonl", "spans.jsonl"]
    assert all(p.stat().st_size < 1000 + 400 for p in tmp_path.iterdir())
