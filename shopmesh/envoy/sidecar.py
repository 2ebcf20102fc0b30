"""The sidecar Envoy of one instance.

- ``ingress``: mTLS from the gateway and the service's dependents only, a fault filter
  (off until switched on through runtime keys), then the local app.
- ``egress_<dep>``: one plaintext loopback listener per sync dependency, for the local app:
  every RPC of the dependency with the gateway's timeouts and retries, to the dependency's
  instances' ingress over mTLS with this instance's certificate.
"""

from __future__ import annotations

from shopmesh.envoy.blocks import (
    HEALTH_PREFIX,
    Json,
    Shared,
    bootstrap,
    downstream_mtls,
    grpc_route,
    http_connection_manager,
    listener,
    local_cluster,
    mesh_cluster,
    method_routes,
    otlp_cluster,
    typed,
)
from shopmesh.envoy.layout import Layout, MeshPlan, sidecar_name, spiffe_id
from shopmesh.envoy.settings import Settings
from shopmesh.topology import LOOPBACK, Instance

LOCAL_APP = "local_app"
INGRESS = "ingress"

# Runtime keys of the fault filter; `shopmesh fault` sets them on the admin API.
FAULT_ABORT_PERCENT = "fault.abort.percent"
FAULT_ABORT_STATUS = "fault.abort.grpc_status"
FAULT_DELAY_PERCENT = "fault.delay.percent"
FAULT_DELAY_MS = "fault.delay.duration_ms"
FAULT_DEFAULT_STATUS = 14  # UNAVAILABLE
FAULT_DEFAULT_DELAY_MS = 1000


def fault_filter() -> Json:
    def off() -> Json:
        return {"numerator": 0, "denominator": "HUNDRED"}

    return {
        "name": "envoy.filters.http.fault",
        "typed_config": typed(
            "extensions.filters.http.fault.v3.HTTPFault",
            abort={"grpc_status": FAULT_DEFAULT_STATUS, "percentage": off()},
            delay={"fixed_delay": f"{FAULT_DEFAULT_DELAY_MS / 1000:g}s", "percentage": off()},
            # With these set, only these keys count (not the generic fault.http.* ones).
            abort_percent_runtime=FAULT_ABORT_PERCENT,
            abort_grpc_status_runtime=FAULT_ABORT_STATUS,
            delay_percent_runtime=FAULT_DELAY_PERCENT,
            delay_duration_runtime=FAULT_DELAY_MS,
        ),
    }


def ingress(instance: Instance, plan: MeshPlan, layout: Layout, shared: Shared) -> Json:
    no_fault = {
        "typed_per_filter_config": {
            "envoy.filters.http.fault": typed("config.route.v3.FilterConfig", disabled=True)
        }
    }
    settings = shared.settings
    routes = [
        # Health checks bypass the fault filter: an instance that fails calls while its
        # health says SERVING is exactly the case outlier detection exists for.
        grpc_route(
            "health",
            LOCAL_APP,
            shared,
            prefix=HEALTH_PREFIX,
            timeout=settings.read_timeout,
            extra=no_fault,
        ),
        grpc_route("app", LOCAL_APP, shared, prefix="/", timeout=settings.write_timeout),
    ]
    hcm = http_connection_manager(INGRESS, routes, [fault_filter()], shared)
    peers = [spiffe_id(p) for p in plan.callers_of(instance.service)]
    tls = downstream_mtls(layout, instance.name, peers)
    return listener(INGRESS, layout.bind, instance.ingress_port, hcm, tls)


def egress(instance: Instance, dependency: str, plan: MeshPlan, shared: Shared) -> Json:
    label = f"egress_{dependency}"
    routes = [
        # The app waits for its dependencies' health before it serves.
        grpc_route(
            f"{dependency}.health",
            dependency,
            shared,
            prefix=HEALTH_PREFIX,
            timeout=shared.settings.read_timeout,
        )
    ]
    for grpc_service in plan.contract(dependency).grpc_services:
        routes += method_routes(grpc_service, dependency, shared)
    hcm = http_connection_manager(label, routes, [], shared)
    # The app's side of the sidecar: loopback only, whatever the ingress binds to.
    return listener(label, LOOPBACK, instance.egress_port(dependency), hcm)


def sidecar_config(instance: Instance, plan: MeshPlan, layout: Layout, settings: Settings) -> Json:
    name = sidecar_name(instance)
    shared = Shared.of(settings, layout.access_log(name), name)
    listeners = [ingress(instance, plan, layout, shared)]
    clusters = [
        local_cluster(LOCAL_APP, instance.app_port, shared),
        otlp_cluster(plan.topology, shared),
    ]
    for dep in instance.depends_on:
        listeners.append(egress(instance, dep, plan, shared))
        clusters.append(mesh_cluster(dep, plan, layout, shared, instance.name))
    return bootstrap(
        name, listeners, clusters, instance.admin_port, outlier_log=layout.outlier_log(name)
    )
