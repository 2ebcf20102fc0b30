"""OpenTelemetry for a service instance: traces and metrics, exported over OTLP.

Configured once per process from the standard variables (`OTEL_EXPORTER_OTLP_ENDPOINT`,
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, ...): the runner points them at the local sink
(shopmesh/tracesink.py), docker-compose at Jaeger. Without an endpoint the SDK still
creates spans (logs carry trace ids) but exports nothing.

Every span carries `service.name` and `service.instance.id`. gRPC server and client
spans come from opentelemetry-instrumentation-grpc; the unit of work, the outbox relay
and the consumers add their own (shopmesh.uow, shopmesh.bus).
"""

from __future__ import annotations

import os
from collections.abc import Callable

from opentelemetry import metrics, trace
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.grpc import (
    aio_client_interceptors,
    aio_server_interceptor,
    filters,
)
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

_ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")

# Health checks run every second from every Envoy: tracing them would drown the rest.
_NOT_HEALTH = filters.negate(filters.service_name("grpc.health.v1.Health"))


def configure(service: str, instance: str) -> Callable[[], None]:
    """Install the tracer and meter providers; returns the flush-and-shutdown function."""
    resource = Resource.create({"service.name": service, "service.instance.id": instance})
    tracer_provider = TracerProvider(resource=resource)
    readers = []
    if any(os.environ.get(name) for name in _ENDPOINT_VARIABLES):
        tracer_provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(insecure=True), schedule_delay_millis=500)
        )
        # The standard switch: a collector that takes only traces (Jaeger) would answer
        # every metrics export with UNIMPLEMENTED.
        if os.environ.get("OTEL_METRICS_EXPORTER") != "none":
            readers.append(
                PeriodicExportingMetricReader(
                    OTLPMetricExporter(insecure=True), export_interval_millis=5000
                )
            )
    meter_provider = MeterProvider(resource=resource, metric_readers=readers)
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(meter_provider)

    def shutdown() -> None:
        tracer_provider.shutdown()
        meter_provider.shutdown()

    return shutdown


def server_interceptor() -> object:
    return aio_server_interceptor(filter_=_NOT_HEALTH)


def client_interceptors() -> list[object]:
    return list(aio_client_interceptors(filter_=_NOT_HEALTH))
