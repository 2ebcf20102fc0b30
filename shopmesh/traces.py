"""Read the local trace sink's files back: find a trace, print its span tree."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from shopmesh.tracesink import KEEP_FILES, LENGTH_BYTES, SPAN_FILE, rotated_name, span_records


@dataclass(frozen=True)
class Span:
    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    kind: str
    service: str
    instance: str
    start_ns: int
    end_ns: int
    status: str
    status_message: str
    attributes: dict[str, Any]

    @property
    def duration_ms(self) -> float:
        return (self.end_ns - self.start_ns) / 1e6


def read_spans(directory: Path) -> Iterator[Span]:
    """Every span in the sink's files, oldest file first."""
    files = [directory / rotated_name(n) for n in range(KEEP_FILES - 1, 0, -1)]
    for path in [*files, directory / SPAN_FILE]:
        if not path.exists():
            continue
        data = path.read_bytes()
        at = 0
        while at + LENGTH_BYTES <= len(data):
            size = int.from_bytes(data[at : at + LENGTH_BYTES], "big")
            end = at + LENGTH_BYTES + size
            if end > len(data):
                break  # a request the sink is writing right now
            request = ExportTraceServiceRequest.FromString(data[at + LENGTH_BYTES : end])
            for record in span_records(request):
                yield Span(**record)
            at = end


def find_trace(directory: Path, key: str | None) -> list[Span]:
    """Spans of the trace with id `key`, or of the trace that carried order `key`;
    the newest trace when `key` is None."""
    spans = list(read_spans(directory))
    if not spans:
        return []
    if key is None:
        trace_id = max(spans, key=lambda s: s.start_ns).trace_id
    elif any(s.trace_id == key for s in spans):
        trace_id = key
    else:
        carrying = [s for s in spans if key in (str(v) for v in s.attributes.values())]
        if not carrying:
            return []
        trace_id = min(carrying, key=lambda s: s.start_ns).trace_id
    return sorted((s for s in spans if s.trace_id == trace_id), key=lambda s: s.start_ns)


def tree(spans: list[Span]) -> list[tuple[int, Span]]:
    """(depth, span) in depth-first order; spans whose parent is missing are roots."""
    ids = {s.span_id for s in spans}
    children: dict[str, list[Span]] = defaultdict(list)
    roots = []
    for span in spans:
        if span.parent_span_id and span.parent_span_id in ids:
            children[span.parent_span_id].append(span)
        else:
            roots.append(span)
    ordered: list[tuple[int, Span]] = []

    def walk(span: Span, depth: int) -> None:
        ordered.append((depth, span))
        for child in children[span.span_id]:
            walk(child, depth + 1)

    for root in roots:
        walk(root, 0)
    return ordered


def orphans(spans: list[Span]) -> list[Span]:
    """Spans that name a parent the trace does not hold."""
    ids = {s.span_id for s in spans}
    return [s for s in spans if s.parent_span_id and s.parent_span_id not in ids]
