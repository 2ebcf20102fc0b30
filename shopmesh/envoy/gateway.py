"""The gateway Envoy: the mesh's only entrance for clients.

Filters, in the order a request meets them: local rate limit (cheapest rejection first),
gRPC-JSON transcoder (so the next filters see every request as gRPC), JWT authn (sets the
caller identity headers), gRPC stats, router. Routes: reflection and health to the
mesh-wide reflector, every RPC to its service's cluster over the sidecars' mTLS ingress.
"""

from __future__ import annotations

from pathlib import Path

from shopmesh.envoy.blocks import (
    HEALTH_PREFIX,
    REFLECTION_PREFIXES,
    Json,
    Shared,
    bootstrap,
    grpc_route,
    http_connection_manager,
    listener,
    local_cluster,
    mesh_cluster,
    method_routes,
    otlp_cluster,
    typed,
)
from shopmesh.envoy.layout import GATEWAY, REFLECTOR, Layout, MeshPlan
from shopmesh.envoy.settings import PUBLIC_METHODS, Settings
from shopmesh.identity import ROLE_HEADER, USER_ID_HEADER

JWT_PROVIDER = "shopmesh"
JWT_ISSUER = "shopmesh"
JWT_AUDIENCE = "shopmesh"


def rate_limit(settings: Settings) -> Json:
    always = {"default_value": {"numerator": 100, "denominator": "HUNDRED"}}
    return {
        "name": "envoy.filters.http.local_ratelimit",
        "typed_config": typed(
            "extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
            stat_prefix="gateway_rate_limit",
            token_bucket={
                "max_tokens": settings.rate_limit_burst,
                "tokens_per_fill": settings.rate_limit_rps,
                "fill_interval": "1s",
            },
            # Without both, the bucket is configured but nothing is limited.
            filter_enabled={**always, "runtime_key": "gateway.rate_limit.enabled"},
            filter_enforced={**always, "runtime_key": "gateway.rate_limit.enforced"},
            rate_limited_as_resource_exhausted=True,
        ),
    }


def transcoder(plan: MeshPlan, layout: Layout) -> Json:
    services = [g.full_name for s in plan.services for g in plan.contract(s).grpc_services]
    return {
        "name": "envoy.filters.http.grpc_json_transcoder",
        "typed_config": typed(
            "extensions.filters.http.grpc_json_transcoder.v3.GrpcJsonTranscoder",
            proto_descriptor=str(layout.descriptor),
            services=services,
            convert_grpc_status=True,
            ignore_unknown_query_parameters=True,
            print_options={"always_print_primitive_fields": True},
        ),
    }


def jwt_authn(jwks: Path) -> Json:
    # Rules without `requires` are public. Paths are gRPC paths: the transcoder ran first.
    public = [{"match": {"path": path}} for path in PUBLIC_METHODS]
    public += [{"match": {"prefix": p}} for p in (HEALTH_PREFIX, *REFLECTION_PREFIXES)]
    return {
        "name": "envoy.filters.http.jwt_authn",
        "typed_config": typed(
            "extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            providers={
                JWT_PROVIDER: {
                    "issuer": JWT_ISSUER,
                    "audiences": [JWT_AUDIENCE],
                    # Read once at start: the user service writes it before it serves.
                    "local_jwks": {"filename": str(jwks)},
                    # Services get the verified identity, never the token itself.
                    "forward": False,
                    # Also strips any client-sent copy of these headers, on every route.
                    "claim_to_headers": [
                        {"header_name": USER_ID_HEADER, "claim_name": "sub"},
                        {"header_name": ROLE_HEADER, "claim_name": "role"},
                    ],
                }
            },
            rules=[*public, {"match": {"prefix": "/"}, "requires": {"provider_name": "shopmesh"}}],
        ),
    }


def grpc_stats() -> Json:
    return {
        "name": "envoy.filters.http.grpc_stats",
        "typed_config": typed(
            "extensions.filters.http.grpc_stats.v3.FilterConfig",
            stats_for_all_methods=True,
            enable_upstream_stats=True,
        ),
    }


def routes(plan: MeshPlan, shared: Shared) -> list[Json]:
    # Reflection is a stream and health may be a Watch stream: no route timeout for them.
    out = [
        grpc_route(f"reflector.{p.strip('/')}", REFLECTOR, shared, prefix=p, timeout=0)
        for p in (*REFLECTION_PREFIXES, HEALTH_PREFIX)
    ]
    for service in plan.services:
        for grpc_service in plan.contract(service).grpc_services:
            out += method_routes(grpc_service, service, shared)
    return out


def clusters(plan: MeshPlan, layout: Layout, shared: Shared) -> list[Json]:
    out = [mesh_cluster(service, plan, layout, shared, GATEWAY) for service in plan.services]
    # The reflector runs beside the gateway, outside the mTLS mesh: plain HTTP/2.
    port, host = plan.topology.reflector_port, layout.host(REFLECTOR)
    out.append(local_cluster(REFLECTOR, port, shared, health_service="", host=host))
    out.append(otlp_cluster(plan.topology, shared))
    return out


def gateway_config(plan: MeshPlan, layout: Layout, settings: Settings, jwks: Path) -> Json:
    topo = plan.topology
    shared = Shared.of(settings, layout.access_log(GATEWAY), GATEWAY)
    filters = [rate_limit(settings), transcoder(plan, layout), jwt_authn(jwks), grpc_stats()]
    hcm = http_connection_manager(
        GATEWAY,
        routes(plan, shared),
        filters,
        shared,
        codec="AUTO",  # gRPC (h2c) and JSON over HTTP/1.1 on one port
        edge=True,
    )
    return bootstrap(
        GATEWAY,
        [listener(GATEWAY, layout.bind, topo.gateway_port, hcm)],
        clusters(plan, layout, shared),
        topo.gateway_admin_port,
        outlier_log=layout.outlier_log(GATEWAY),
    )
