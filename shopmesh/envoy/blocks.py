"""Building blocks shared by the gateway and sidecar configs (plain dicts, Envoy v3 JSON).

Each function returns one Envoy message; the config modules assemble them top to bottom
(listeners -> filters -> routes -> clusters -> admin) so the rendered YAML reads like a
hand-written example. Blocks that many listeners, routes or clusters of one config repeat
(:class:`Shared`) are rendered once as a named YAML anchor and then referenced.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shopmesh.contracts import GrpcService, Method
from shopmesh.envoy.layout import Layout, MeshPlan, spiffe_id
from shopmesh.envoy.settings import Settings, duration
from shopmesh.topology import LOOPBACK, Topology

Json = dict[str, Any]

HEALTH_PREFIX = "/grpc.health.v1.Health/"
REFLECTION_PREFIXES = (
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)

_TYPES = "type.googleapis.com/envoy."

OTLP_SINK = "otlp_sink"


class Anchored(dict[str, Any]):
    """A block rendered once as ``&anchor`` and then as ``*anchor`` wherever it recurs."""

    def __init__(self, anchor: str, value: Json) -> None:
        super().__init__(value)
        self.anchor = anchor


def typed(type_name: str, **config: Any) -> Json:
    """A ``typed_config`` value: ``typed("extensions.filters...Router")``."""
    return {"@type": _TYPES + type_name, **config}


def address(host: str, port: int) -> Json:
    return {"socket_address": {"address": host, "port_value": port}}


@dataclass(frozen=True)
class Shared:
    """The settings of one config and the blocks its parts have in common."""

    settings: Settings
    access_log: list[Json]
    read_retries: Anchored
    http2: Anchored
    circuit_breakers: Anchored
    outlier_detection: Anchored
    tracing: Json

    @classmethod
    def of(cls, settings: Settings, access_log_path: Path, service_name: str) -> Shared:
        return cls(
            settings,
            [access_log(access_log_path)],
            retry_policy(settings),
            http2_options(),
            circuit_breakers(settings),
            outlier_detection(settings),
            tracing(service_name, settings.trace_sampling_percent),
        )


# -- listeners ------------------------------------------------------------------------------


def access_log(path: Path) -> Anchored:
    """One JSON line per request: enough to see retries, deadlines and who was called."""
    fields = {
        "start": "%START_TIME%",
        "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
        "grpc_status": "%GRPC_STATUS%",
        "http_status": "%RESPONSE_CODE%",
        "flags": "%RESPONSE_FLAGS%",
        "details": "%RESPONSE_CODE_DETAILS%",
        "duration_ms": "%DURATION%",
        "grpc_timeout": "%REQ(GRPC-TIMEOUT)%",
        "attempts": "%UPSTREAM_REQUEST_ATTEMPT_COUNT%",
        "cluster": "%UPSTREAM_CLUSTER%",
        "upstream": "%UPSTREAM_HOST%",
        "user": "%REQ(X-SHOP-USER-ID)%",
    }
    # Health checks run every second from several Envoys: logging them buries the rest.
    not_health = {
        "name": ":path",
        "string_match": {"prefix": HEALTH_PREFIX},
        "invert_match": True,
    }
    return Anchored(
        "access_log",
        {
            "name": "envoy.access_loggers.file",
            "filter": {"header_filter": {"header": not_health}},
            "typed_config": typed(
                "extensions.access_loggers.file.v3.FileAccessLog",
                path=str(path),
                log_format={"json_format": fields},
            ),
        },
    )


def http_connection_manager(
    stat_prefix: str,
    routes: list[Json],
    http_filters: list[Json],
    shared: Shared,
    *,
    codec: str = "HTTP2",
    edge: bool = False,
) -> Json:
    """``edge``: clients connect here directly, so trust no forwarding headers from them."""
    options: Json = {"use_remote_address": True} if edge else {}
    return {
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": typed(
            "extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            stat_prefix=stat_prefix,
            codec_type=codec,
            **options,
            access_log=shared.access_log,
            tracing=shared.tracing,
            route_config={
                "name": f"{stat_prefix}_routes",
                "virtual_hosts": [{"name": stat_prefix, "domains": ["*"], "routes": routes}],
            },
            http_filters=[*http_filters, router()],
        ),
    }


def tracing(service_name: str, sampling_percent: float) -> Json:
    """Spans, W3C traceparent in and out, exported over OTLP/gRPC. A request without a
    sampling decision starts a trace at `sampling_percent` (runtime key
    `tracing.random_sampling`: the bench changes it through the admin API)."""
    return {
        "provider": {
            "name": "envoy.tracers.opentelemetry",
            "typed_config": typed(
                "config.trace.v3.OpenTelemetryConfig",
                grpc_service={"envoy_grpc": {"cluster_name": OTLP_SINK}, "timeout": "1s"},
                service_name=service_name,
            ),
        },
        # Everything by default: a local mesh is for seeing whole journeys.
        "random_sampling": {"value": sampling_percent},
    }


def otlp_cluster(topology: Topology, shared: Shared) -> Json:
    """The collector Envoy exports spans to. It must be HTTP/2, or every export fails
    silently while `tracing.opentelemetry.spans_sent` still counts."""
    host, _, port = shared.settings.otlp_target.rpartition(":")
    if not host:
        host, port = LOOPBACK, str(topology.otlp_port)
    return {
        "name": OTLP_SINK,
        "type": "STRICT_DNS",
        "connect_timeout": duration(shared.settings.connect_timeout),
        "typed_extension_protocol_options": shared.http2,
        "load_assignment": endpoints(OTLP_SINK, [(OTLP_SINK, host, int(port))]),
    }


def listener(
    name: str,
    host: str,
    port: int,
    hcm: Json,
    transport_socket: Json | None = None,
) -> Json:
    chain: Json = {"filters": [hcm]}
    if transport_socket is not None:
        chain["transport_socket"] = transport_socket
    return {"name": name, "address": address(host, port), "filter_chains": [chain]}


def router() -> Json:
    return {
        "name": "envoy.filters.http.router",
        "typed_config": typed("extensions.filters.http.router.v3.Router"),
    }


# -- routes ---------------------------------------------------------------------------------


def retry_policy(settings: Settings) -> Anchored:
    """Retry where the request surely did no work: the host refused it or said UNAVAILABLE.

    Never ``resource-exhausted`` (a retry only adds load to an overloaded upstream) and
    never ``deadline-exceeded`` (the client's time is gone).
    """
    return Anchored(
        "read_retries",
        {
            "retry_on": settings.retry_on,
            "num_retries": settings.num_retries,
            # Try another host: the one that just failed is the least likely to succeed.
            "retry_host_predicate": [
                {
                    "name": "envoy.retry_host_predicates.previous_hosts",
                    "typed_config": typed(
                        "extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
                    ),
                }
            ],
            "host_selection_retry_max_attempts": 3,
            "retry_back_off": {"base_interval": "0.025s", "max_interval": "0.25s"},
        },
    )


def grpc_route(
    name: str,
    cluster: str,
    shared: Shared,
    *,
    path: str | None = None,
    prefix: str | None = None,
    timeout: float,
    retry: bool = False,
    extra: Json | None = None,
) -> Json:
    """A route for gRPC calls. A client's deadline (grpc-timeout) is honoured up to
    ``grpc_timeout_max``; without one the call gets ``timeout`` (0 = none, for streams).

    ``max_stream_duration`` rather than the route ``timeout``: once the block is there,
    Envoy ignores the route timeout for gRPC (tried: a 7 s call passed a 5 s timeout).
    """
    match: Json = {"path": path} if path is not None else {"prefix": prefix or "/"}
    match["grpc"] = {}
    action: Json = {
        "cluster": cluster,
        "max_stream_duration": {
            "max_stream_duration": duration(timeout),
            "grpc_timeout_header_max": duration(shared.settings.grpc_timeout_max),
        },
    }
    if retry:
        action["retry_policy"] = shared.read_retries
    route: Json = {"name": name, "match": match, "route": action}
    if extra:
        route.update(extra)
    return route


def method_routes(grpc_service: GrpcService, cluster: str, shared: Shared) -> list[Json]:
    """One route per RPC: reads get the short timeout and retries, writes neither."""

    def one(method: Method) -> Json:
        read = method.is_read
        settings = shared.settings
        return grpc_route(
            f"{cluster}.{method.name}",
            cluster,
            shared,
            path=method.path,
            timeout=settings.read_timeout if read else settings.write_timeout,
            retry=read,
        )

    return [one(m) for m in grpc_service.methods]


# -- TLS ------------------------------------------------------------------------------------


def _certificate(layout: Layout, cert_name: str) -> Json:
    return {
        "certificate_chain": {"filename": str(layout.cert(cert_name))},
        "private_key": {"filename": str(layout.key(cert_name))},
    }


def _san_matchers(uris: Iterable[str]) -> list[Json]:
    return [{"san_type": "URI", "matcher": {"exact": uri}} for uri in uris]


def downstream_mtls(layout: Layout, cert_name: str, allowed_peers: Sequence[str]) -> Json:
    """Server side of mTLS: present ``cert_name``, require a client certificate from the
    mesh CA whose URI SAN is one of ``allowed_peers``."""
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": typed(
            "extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            require_client_certificate=True,
            common_tls_context={
                "alpn_protocols": ["h2"],
                "tls_certificates": [_certificate(layout, cert_name)],
                "validation_context": {
                    "trusted_ca": {"filename": str(layout.ca)},
                    "match_typed_subject_alt_names": _san_matchers(allowed_peers),
                },
            },
        ),
    }


def upstream_mtls(layout: Layout, cert_name: str, server_id: str) -> Json:
    """Client side of mTLS: present ``cert_name``, accept only a server named ``server_id``."""
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": typed(
            "extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            common_tls_context={
                "alpn_protocols": ["h2"],
                "tls_certificates": [_certificate(layout, cert_name)],
                "validation_context": {
                    "trusted_ca": {"filename": str(layout.ca)},
                    "match_typed_subject_alt_names": _san_matchers([server_id]),
                },
            },
        ),
    }


# -- clusters -------------------------------------------------------------------------------


def http2_options() -> Anchored:
    return Anchored(
        "http2",
        {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": typed(
                "extensions.upstreams.http.v3.HttpProtocolOptions",
                explicit_http_config={"http2_protocol_options": {}},
            )
        },
    )


def circuit_breakers(settings: Settings) -> Anchored:
    thresholds = {
        "priority": "DEFAULT",
        "max_connections": settings.max_connections,
        "max_pending_requests": settings.max_pending_requests,
        "max_requests": settings.max_requests,
        # Takes the place of max_retries: retries may be at most this share of the active
        # requests (but always a few), so retries cannot multiply an overload.
        "retry_budget": {
            "budget_percent": {"value": settings.retry_budget_percent},
            "min_retry_concurrency": settings.min_retry_concurrency,
        },
        "track_remaining": True,
    }
    return Anchored("circuit_breakers", {"thresholds": [thresholds]})


def outlier_detection(settings: Settings) -> Anchored:
    return Anchored(
        "outlier_detection",
        {
            "consecutive_5xx": settings.consecutive_5xx,
            "consecutive_gateway_failure": settings.consecutive_gateway_failure,
            # Defaults are 100 and 0: without the second, gateway failures never eject.
            "enforcing_consecutive_5xx": 100,
            "enforcing_consecutive_gateway_failure": 100,
            # Success-rate ejection needs more traffic than a local mesh sees.
            "enforcing_success_rate": 0,
            "interval": duration(settings.outlier_interval),
            "base_ejection_time": duration(settings.base_ejection_time),
            "max_ejection_time": duration(settings.max_ejection_time),
            # The default 10 % forbids any ejection in a two-host cluster.
            "max_ejection_percent": settings.max_ejection_percent,
            # By default a passing active health check un-ejects at once; ours bypass the
            # fault filter and pass every second, so an ejection would last under a second.
            "successful_active_health_check_uneject_host": False,
        },
    )


def grpc_health_check(settings: Settings, service_name: str) -> list[Json]:
    return [
        {
            "timeout": duration(settings.health_timeout),
            "interval": duration(settings.health_interval),
            # Until a cluster has had traffic Envoy checks at this pace (default 60 s).
            "no_traffic_interval": duration(settings.health_no_traffic_interval),
            "unhealthy_threshold": settings.unhealthy_threshold,
            "healthy_threshold": settings.healthy_threshold,
            "grpc_health_check": {"service_name": service_name},
        }
    ]


def discovery(hosts: Iterable[str]) -> str:
    """A cluster's type: STATIC takes IP addresses only; a host name (a container's, in
    docker-compose.yml) must be resolved, and re-resolved when the container restarts."""

    def is_ip(host: str) -> bool:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            return False
        return True

    return "STATIC" if all(is_ip(h) for h in hosts) else "STRICT_DNS"


def endpoints(cluster: str, hosts: Iterable[tuple[str, str, int]]) -> Json:
    """``hosts``: (instance name, host, port); the name shows in /clusters as hostname."""
    return {
        "cluster_name": cluster,
        "endpoints": [
            {
                "lb_endpoints": [
                    {"endpoint": {"address": address(host, port), "hostname": name}}
                    for name, host, port in hosts
                ]
            }
        ],
    }


def mesh_cluster(service: str, plan: MeshPlan, layout: Layout, shared: Shared, client: str) -> Json:
    """`service`'s instances, reached through their sidecars' ingress over mTLS (with
    `client`'s certificate), with the full set of resilience settings."""
    settings = shared.settings
    hosts = [(i.name, layout.host(i.name), i.ingress_port) for i in plan.instances_of(service)]
    return {
        "name": service,
        "type": discovery(host for _, host, _ in hosts),
        "connect_timeout": duration(settings.connect_timeout),
        "lb_policy": "ROUND_ROBIN",
        # Apply host health changes at once, not batched over a second.
        "common_lb_config": {"update_merge_window": "0s"},
        "typed_extension_protocol_options": shared.http2,
        "circuit_breakers": shared.circuit_breakers,
        "outlier_detection": shared.outlier_detection,
        "health_checks": grpc_health_check(
            settings, plan.contract(service).grpc_services[0].full_name
        ),
        "load_assignment": endpoints(service, hosts),
        "transport_socket": upstream_mtls(layout, client, spiffe_id(service)),
    }


def local_cluster(
    name: str,
    port: int,
    shared: Shared,
    health_service: str | None = None,
    host: str = LOOPBACK,
) -> Json:
    """Plain HTTP/2 to a process beside this Envoy (a sidecar's app, the reflector)."""
    cluster: Json = {
        "name": name,
        "type": discovery([host]),
        "connect_timeout": duration(shared.settings.connect_timeout),
        "typed_extension_protocol_options": shared.http2,
        "circuit_breakers": shared.circuit_breakers,
        "load_assignment": endpoints(name, [(name, host, port)]),
    }
    if health_service is not None:
        cluster["health_checks"] = grpc_health_check(shared.settings, health_service)
    return cluster


# -- bootstrap ------------------------------------------------------------------------------


def bootstrap(
    node: str,
    listeners: list[Json],
    clusters: list[Json],
    admin_port: int,
    *,
    outlier_log: Path | None = None,
) -> Json:
    config: Json = {
        "node": {"id": node, "cluster": "shopmesh"},
        "static_resources": {"listeners": listeners, "clusters": clusters},
        # Runtime keys can be changed with POST /runtime_modify (the fault filter's switch).
        "layered_runtime": {
            "layers": [
                {
                    "name": "static",
                    # Export spans in batches of up to 100, at least every second: one
                    # export per few spans (the default) tripled the trace sink's CPU
                    # per call (docs/benchmarks.md).
                    "static_layer": {
                        "tracing.opentelemetry.min_flush_spans": 100,
                        "tracing.opentelemetry.flush_interval_ms": 1000,
                    },
                },
                {"name": "admin", "admin_layer": {}},
            ]
        },
        # Without a connection limit Envoy warns at start (and would accept without bound).
        "overload_manager": {
            "resource_monitors": [
                {
                    "name": "envoy.resource_monitors.global_downstream_max_connections",
                    "typed_config": typed(
                        "extensions.resource_monitors.downstream_connections.v3."
                        "DownstreamConnectionsConfig",
                        max_active_downstream_connections=10000,
                    ),
                }
            ]
        },
    }
    if outlier_log is not None:
        # Ejections and returns, one JSON line each (tests and `shopmesh status` read them).
        config["cluster_manager"] = {"outlier_detection": {"event_log_path": str(outlier_log)}}
    # Admin stays on loopback whatever the listeners bind to: it can change runtime keys.
    config["admin"] = {"address": address(LOOPBACK, admin_port)}
    return config
