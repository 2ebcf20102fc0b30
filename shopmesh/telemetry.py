"""OpenTelemetry for a service instance: traces and metrics, exported over OTLP.

Configured once per process from the standard variables (`OTEL_EXPORTER_OTLP_ENDPOINT`,
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, `OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG`,
`OTEL_PROPAGATORS`, ...): the runner points the endpoint at the local sink
(shopmesh/tracesink.py), docker-compose at Jaeger. Without an endpoint the SDK still
creates spans (logs carry trace ids) but exports nothing.

Every span carries `service.name` and `service.instance.id`. The gRPC server span of a
call is started here and driven by the service's interceptor (shopmesh.rpc); calls to
dependencies get a client span from `client_interceptors()`. Both are lean on purpose:
the span and the few attributes the semantic conventions name for RPC (`rpc.system`,
`rpc.service`, `rpc.method`, `rpc.grpc.status_code`), with W3C context in and out through
the configured propagator, and nothing else; every attribute is paid for again when the
span is exported. The unit of work, the outbox relay and the consumers add their own
spans (shopmesh.uow, shopmesh.bus).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Sequence
from contextvars import Token
from typing import Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import metrics, propagate, trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace.status import Status, StatusCode

_ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
_TRACER = "shopmesh.rpc"

# Health checks run every second from every Envoy: tracing them would drown the rest.
_HEALTH = "/grpc.health.v1.Health/"

# The codes that make a server span an error (OpenTelemetry's gRPC conventions): the
# others are the caller's mistake, not the server's.
_SERVER_ERRORS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)


def configure(service: str, instance: str) -> Callable[[], None]:
    """Install the tracer and meter providers; returns the flush-and-shutdown function.

    No sampler is passed on purpose: the SDK then reads `OTEL_TRACES_SAMPLER` and
    `OTEL_TRACES_SAMPLER_ARG`, and defaults to `parentbased_always_on`.
    """
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
    # Exemplars (a trace id kept with the histogram's buckets) cost every call made in a
    # sampled span about 2 us more, and nothing here reads them: off, unless the
    # standard variable asks for them.
    exemplars = (
        None if os.environ.get("OTEL_METRICS_EXEMPLAR_FILTER") else AlwaysOffExemplarFilter()
    )
    meter_provider = MeterProvider(
        resource=resource, metric_readers=readers, exemplar_filter=exemplars
    )
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(meter_provider)

    def shutdown() -> None:
        tracer_provider.shutdown()
        meter_provider.shutdown()

    return shutdown


def _rpc_attributes(method: str) -> dict[str, Any]:
    service, _, name = method.lstrip("/").partition("/")
    return {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}


def _end(span: trace.Span, code: grpc.StatusCode, description: str | None) -> None:
    if span.is_recording():
        span.set_attribute("rpc.grpc.status_code", code.value[0])
        if description is not None:
            span.set_status(Status(StatusCode.ERROR, f"{code}:{description}"))
    span.end()


def tracer(provider: trace.TracerProvider | None = None) -> trace.Tracer:
    """The tracer of the RPC spans; the global provider's unless told otherwise (tests).

    Call it once `configure` ran, not at import: a tracer got before that is a proxy,
    which looks its provider up again on every span.
    """
    return trace.get_tracer(_TRACER, tracer_provider=provider)


class ServerSpans:
    """The SERVER spans of one method: a child of the caller's context, when it sent one.

    Made once per method (shopmesh.rpc caches it), so the name and attributes are too.
    """

    def __init__(self, method: str, tracer: trace.Tracer) -> None:
        self._tracer = tracer
        self._name = method
        self._attributes = _rpc_attributes(method)

    def start(
        self, metadata: Sequence[tuple[str, Any]] | None
    ) -> tuple[trace.Span, Token[Context]]:
        """Start the call's span and make it current until `end`."""
        parent = propagate.extract(dict(metadata or ()))
        span = self._tracer.start_span(
            self._name, parent, kind=trace.SpanKind.SERVER, attributes=self._attributes
        )
        return span, otel_context.attach(trace.set_span_in_context(span, parent))

    @staticmethod
    def end(
        span: trace.Span, token: Token[Context], code: grpc.StatusCode, details: str | None
    ) -> None:
        _end(span, code, (details or "") if code in _SERVER_ERRORS else None)
        otel_context.detach(token)


class _ClientSpans(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """A CLIENT span per unary call to a dependency, its context sent as `traceparent`."""

    def __init__(self, provider: trace.TracerProvider | None) -> None:
        self._tracer = tracer(provider)
        self._attributes: dict[str, dict[str, Any]] = {}

    async def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Awaitable[Any]],
        details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        method = details.method
        if isinstance(method, bytes):  # grpc has passed either (grpc/grpc#31092)
            method = method.decode()
        if method.startswith(_HEALTH):
            return await continuation(details, request)
        attributes = self._attributes.get(method)
        if attributes is None:
            attributes = self._attributes.setdefault(method, _rpc_attributes(method))
        span = self._tracer.start_span(method, kind=trace.SpanKind.CLIENT, attributes=attributes)
        carrier: dict[str, str] = {}
        propagate.inject(carrier, trace.set_span_in_context(span))
        metadata = grpc.aio.Metadata(*(details.metadata or ()), *carrier.items())
        code, description = grpc.StatusCode.UNKNOWN, None
        try:
            call = await continuation(details._replace(metadata=metadata), request)
            code = await call.code()
            if code != grpc.StatusCode.OK:
                description = await call.details()
            return call
        except grpc.aio.AioRpcError as error:
            code, description = error.code(), error.details()
            raise
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        finally:
            # For a caller every code but OK is an error.
            _end(span, code, None if code == grpc.StatusCode.OK else (description or ""))


def client_interceptors(
    provider: trace.TracerProvider | None = None,
) -> list[grpc.aio.ClientInterceptor]:
    return [_ClientSpans(provider)]
