"""A local OTLP trace receiver: spans in, a file of export requests out, no Docker needed.

The runner starts it (`python -m shopmesh.tracesink --port P --dir var/traces`); every
service and Envoy export OTLP/gRPC to it. Each export request is appended to
`spans.otlp` as it came off the wire, undecoded, behind its length (4 bytes, big
endian): the sink receives every span of the mesh, and decoding each into a record as
it arrived cost it about 100 us of CPU per span, some 2.5 ms per order
(docs/benchmarks.md). `shopmesh trace` decodes them when asked (shopmesh/traces.py).
When the file passes MAX_FILE_BYTES it is rotated to `spans.1.otlp` (and so on,
KEEP_FILES in all), so a long run cannot fill the disk.

It also receives the services' OTLP metrics and keeps `rpc-stats.json` current: per
service requests per second, error rate and p50/p99 over the latest export window
(shopmesh/rpcstats.py), which `shopmesh status` shows.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
from pathlib import Path
from typing import Any, BinaryIO

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import (
    metrics_service_pb2,
    metrics_service_pb2_grpc,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from shopmesh.rpcstats import HISTOGRAM, Tracker

log = logging.getLogger(__name__)

MAX_FILE_BYTES = 20 * 1024 * 1024
KEEP_FILES = 5
SPAN_FILE = "spans.otlp"
LENGTH_BYTES = 4
TRACE_SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
STATS_FILE = "rpc-stats.json"

_KINDS = {
    value: name.removeprefix("SPAN_KIND_").lower()
    for name, value in trace_pb2.Span.SpanKind.items()
}


def _value(value: common_pb2.AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in value.kvlist_value.values}
    if kind == "bytes_value":
        return value.bytes_value.hex()
    return getattr(value, kind) if kind else None


def _attributes(items: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in items}


def span_records(request: trace_service_pb2.ExportTraceServiceRequest) -> list[dict[str, Any]]:
    """One flat record per span, with its resource's service name and instance."""
    records = []
    for resource_spans in request.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                records.append(
                    {
                        "trace_id": span.trace_id.hex(),
                        "span_id": span.span_id.hex(),
                        "parent_span_id": span.parent_span_id.hex(),
                        "name": span.name,
                        "kind": _KINDS.get(span.kind, "unspecified"),
                        "service": resource.get("service.name", "?"),
                        "instance": resource.get("service.instance.id", ""),
                        "start_ns": span.start_time_unix_nano,
                        "end_ns": span.end_time_unix_nano,
                        "status": trace_pb2.Status.StatusCode.Name(span.status.code)
                        .removeprefix("STATUS_CODE_")
                        .lower(),
                        "status_message": span.status.message,
                        "attributes": _attributes(span.attributes),
                    }
                )
    return records


def rotated_name(n: int) -> str:
    return f"spans.{n}.otlp"


class SpanFile:
    """Appends length-prefixed export requests, rotating at `max_bytes`, keeping `keep`."""

    def __init__(self, directory: Path, max_bytes: int = MAX_FILE_BYTES, keep: int = KEEP_FILES):
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / SPAN_FILE
        self.max_bytes = max_bytes
        self.keep = keep
        self._file: BinaryIO | None = None

    def append(self, request: bytes) -> None:
        """One export request, as received. A write of a few kilobytes to the page cache:
        cheaper on the loop than a hop to a thread."""
        if self._file is None:
            self._file = self.path.open("ab")
        elif self._file.tell() >= self.max_bytes:
            self._file.close()
            self._rotate()
            self._file = self.path.open("ab")
        self._file.write(len(request).to_bytes(LENGTH_BYTES, "big") + request)
        self._file.flush()  # `shopmesh trace` reads the file while the sink runs

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _rotate(self) -> None:
        rotated = [self.path.with_name(rotated_name(n)) for n in range(1, self.keep)]
        rotated[-1].unlink(missing_ok=True)
        for older, newer in zip(
            reversed(rotated), reversed([self.path, *rotated[:-1]]), strict=True
        ):
            if newer.exists():
                newer.rename(older)


def trace_handler(spans: SpanFile) -> grpc.GenericRpcHandler:
    """TraceService/Export with no request decoding: the bytes go to the file."""

    async def export(request: bytes, context: Any) -> bytes:
        spans.append(request)
        return b""  # an empty ExportTraceServiceResponse: all accepted

    return grpc.method_handlers_generic_handler(
        TRACE_SERVICE, {"Export": grpc.unary_unary_rpc_method_handler(export)}
    )


class MetricsReceiver(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, directory: Path) -> None:
        self.path = directory / STATS_FILE
        self.tracker = Tracker()

    async def Export(
        self, request: metrics_service_pb2.ExportMetricsServiceRequest, context: Any
    ) -> metrics_service_pb2.ExportMetricsServiceResponse:
        latest = 0
        for resource_metrics in request.resource_metrics:
            resource = _attributes(resource_metrics.resource.attributes)
            points = [
                {
                    "method": attributes.get("rpc.method", "?"),
                    "code": int(attributes.get("rpc.grpc.status_code", 0)),
                    "time_ns": point.time_unix_nano,
                    "count": point.count,
                    "bounds": list(point.explicit_bounds),
                    "buckets": list(point.bucket_counts),
                }
                for scope in resource_metrics.scope_metrics
                for metric in scope.metrics
                if metric.name == HISTOGRAM
                for point in metric.histogram.data_points
                for attributes in [_attributes(point.attributes)]
            ]
            latest = max([latest, *(p["time_ns"] for p in points)])
            self.tracker.observe(
                resource.get("service.name", "?"), resource.get("service.instance.id", "?"), points
            )
        if latest:
            await asyncio.to_thread(self._write, self.tracker.summary(latest))
        return metrics_service_pb2.ExportMetricsServiceResponse()

    def _write(self, summary: dict[str, Any]) -> None:
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(summary, indent=1))
        temporary.replace(self.path)  # readers never see half a file


async def serve(port: int, directory: Path, stop: asyncio.Event) -> None:
    server = grpc.aio.server()
    spans = SpanFile(directory)  # creates the directory
    server.add_generic_rpc_handlers([trace_handler(spans)])
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(
        MetricsReceiver(directory), server
    )
    health_servicer = health.aio.HealthServicer()
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    log.info("trace sink on 127.0.0.1:%d writing %s", port, directory)
    await stop.wait()
    await server.stop(2)
    spans.close()


async def _main(port: int, directory: Path) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await serve(port, directory, stop)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", type=Path, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    asyncio.run(_main(args.port, args.dir))


if __name__ == "__main__":
    main()
