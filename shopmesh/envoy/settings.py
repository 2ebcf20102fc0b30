"""The resilience settings every generated Envoy config uses, in one place.

docs/mesh.md explains each value and why it was chosen. A few can be moved through the
environment (the bench raises the rate limit; tests shrink thresholds to stay quick).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

# Which RPCs need no token: signing up, logging in. Health and reflection are public too.
PUBLIC_METHODS = (
    "/shop.user.v1.UserService/Register",
    "/shop.user.v1.UserService/Login",
)

# Environment overrides: variable -> field of Settings (all integers).
ENV_OVERRIDES = {
    "SHOPMESH_GATEWAY_RPS": "rate_limit_rps",
    "SHOPMESH_GATEWAY_BURST": "rate_limit_burst",
    "SHOPMESH_ENVOY_MAX_CONNECTIONS": "max_connections",
    "SHOPMESH_ENVOY_MAX_PENDING": "max_pending_requests",
    "SHOPMESH_ENVOY_MAX_REQUESTS": "max_requests",
}


# An OTLP/gRPC collector (host:port) to send every span and metric to instead of the
# local sink, for example Jaeger's 4317 (docs/observability.md).
OTLP_TARGET_ENV = "SHOPMESH_OTLP_TARGET"


@dataclass(frozen=True)
class Settings:
    # Timeouts (seconds). A client's grpc-timeout wins up to grpc_timeout_max.
    read_timeout: float = 5.0
    write_timeout: float = 10.0
    grpc_timeout_max: float = 30.0
    connect_timeout: float = 1.0

    # Retries: idempotent reads only, only when the request surely did no work.
    retry_on: str = "unavailable,connect-failure,refused-stream"
    num_retries: int = 2
    retry_budget_percent: float = 20.0
    min_retry_concurrency: int = 3

    # Circuit breakers, per cluster.
    max_connections: int = 32
    max_pending_requests: int = 32
    max_requests: int = 64

    # Outlier detection.
    consecutive_5xx: int = 5
    consecutive_gateway_failure: int = 3
    outlier_interval: float = 1.0
    base_ejection_time: float = 5.0
    max_ejection_time: float = 30.0
    max_ejection_percent: int = 50

    # Active gRPC health checks.
    health_interval: float = 1.0
    health_no_traffic_interval: float = 2.0
    health_timeout: float = 1.0
    unhealthy_threshold: int = 2
    healthy_threshold: int = 1

    # Gateway local rate limit: a token bucket shared by every connection.
    rate_limit_rps: int = 200
    rate_limit_burst: int = 400

    # Where spans go (host:port, OTLP/gRPC); empty means the mesh's own trace sink.
    otlp_target: str = ""
    # Percent of requests arriving without a sampling decision that start a trace. Envoy
    # follows a sampled parent's decision; the services sample parent-based. So the
    # gateway, where every client request starts its trace, decides for the whole path.
    trace_sampling_percent: float = 100.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        changes: dict[str, Any] = {}
        for variable, name in ENV_OVERRIDES.items():
            raw = env.get(variable, "")
            if not raw:
                continue
            try:
                value = int(raw)
            except ValueError:
                value = 0
            if value <= 0:
                raise ValueError(f"{variable} must be a positive integer, got {raw!r}")
            changes[name] = value
        return replace(
            cls(),
            **changes,
            otlp_target=env.get(OTLP_TARGET_ENV, ""),
            trace_sampling_percent=sampling_percent(env),
        )

    def as_dict(self) -> dict[str, object]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def sampling_percent(env: Mapping[str, str]) -> float:
    """The OpenTelemetry SDK's standard sampler variables as Envoy's percentage, so one
    setting (`OTEL_TRACES_SAMPLER=parentbased_traceidratio OTEL_TRACES_SAMPLER_ARG=0.1`)
    samples the Envoys and the services alike. Unset: everything (the SDK's default)."""
    sampler = env.get("OTEL_TRACES_SAMPLER", "parentbased_always_on")
    if sampler in ("always_off", "parentbased_always_off"):
        return 0.0
    if sampler in ("traceidratio", "parentbased_traceidratio"):
        raw = env.get("OTEL_TRACES_SAMPLER_ARG", "1.0")
        try:
            ratio = float(raw)
        except ValueError:
            raise ValueError(f"OTEL_TRACES_SAMPLER_ARG must be a ratio, got {raw!r}") from None
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"OTEL_TRACES_SAMPLER_ARG must be in [0, 1], got {raw!r}")
        return ratio * 100
    return 100.0


def duration(seconds: float) -> str:
    """Envoy's Duration JSON form: ``1s``, ``0.25s``."""
    text = f"{seconds:.3f}".rstrip("0").rstrip(".")
    return f"{text}s"
