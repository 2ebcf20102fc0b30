"""The floor: a bare Envoy chain with no filters, beside the mesh, for the same hops.

``front`` stands where the gateway stands, ``back`` where the sidecar stands:

    client -> front (plain h2c, router only) -> back (plain h2c, router only) -> inventory-1

A client that dials ``back`` directly gets the one-hop floor (beside the sidecar path);
dialling ``front`` gives the two-hop floor (beside gateway + sidecar). Same Envoy binary,
same concurrency as the Envoy it stands for, no TLS, no access log, no retries, no limits:
whatever the real path costs above this is what its filters and mTLS cost.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from shopmesh.envoy import admin
from shopmesh.envoy.blocks import (
    Json,
    address,
    endpoints,
    listener,
    router,
    typed,
)
from shopmesh.envoy.render import envoy_binary
from shopmesh.runner import Program, RunContext
from shopmesh.topology import LOOPBACK, Topology

# Ports inside the base block's reserve for mesh-wide processes (base + 6..99).
FRONT_OFFSET = 90
BACK_OFFSET = 91
FRONT_ADMIN_OFFSET = 92
BACK_ADMIN_OFFSET = 93
KIND = "floor"
TARGET_SERVICE = "inventory"


@dataclass(frozen=True)
class Hop:
    name: str
    port: int
    admin_port: int
    upstream_port: int
    concurrency: int

    def config(self) -> Json:
        hcm = {
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": typed(
                "extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                stat_prefix=self.name,
                codec_type="HTTP2",
                route_config={
                    "name": "all",
                    "virtual_hosts": [
                        {
                            "name": "all",
                            "domains": ["*"],
                            "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "next"}}],
                        }
                    ],
                },
                http_filters=[router()],
            ),
        }
        cluster = {
            "name": "next",
            "type": "STATIC",
            "connect_timeout": "1s",
            "typed_extension_protocol_options": {
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": typed(
                    "extensions.upstreams.http.v3.HttpProtocolOptions",
                    explicit_http_config={"http2_protocol_options": {}},
                )
            },
            "load_assignment": endpoints("next", [("next", LOOPBACK, self.upstream_port)]),
        }
        return {
            "node": {"id": self.name, "cluster": "bench"},
            "static_resources": {
                "listeners": [listener(self.name, LOOPBACK, self.port, hcm)],
                "clusters": [cluster],
            },
            "admin": {"address": address(LOOPBACK, self.admin_port)},
        }


def hops(topology: Topology) -> tuple[Hop, Hop]:
    """(front, back); front has the gateway's concurrency (2), back a sidecar's (1)."""
    base = topology.base_port
    app = topology.service(TARGET_SERVICE).instances[0].app_port
    back = Hop("floor-back", base + BACK_OFFSET, base + BACK_ADMIN_OFFSET, app, 1)
    front = Hop("floor-front", base + FRONT_OFFSET, base + FRONT_ADMIN_OFFSET, back.port, 2)
    return front, back


def config_path(var: Path, hop: Hop) -> Path:
    return var / "envoy" / f"{hop.name}.yaml"


def write_configs(var: Path, topology: Topology) -> None:
    for hop in hops(topology):
        path = config_path(var, hop)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(hop.config(), sort_keys=False))


def ready(topology: Topology) -> bool:
    return all(admin.ready(hop.admin_port) for hop in hops(topology))


def programs(ctx: RunContext) -> list[Program]:
    """A runner builder: the two floor Envoys (configs from :func:`write_configs`)."""
    out = []
    for hop in hops(ctx.topology):
        command = (
            envoy_binary(),
            "-c",
            str(config_path(ctx.var.root, hop)),
            "--disable-hot-restart",
            "--concurrency",
            str(hop.concurrency),
            "--log-level",
            "warning",
        )
        out.append(
            Program(
                name=hop.name,
                kind=KIND,
                command=command,
                log=ctx.var.log_file(hop.name),
                directory=ctx.var.root,
                ports={"listener": hop.port, "admin": hop.admin_port},
                # Readiness: bench.mesh waits for each admin's /ready (floor.ready).
                priority=250,
            )
        )
    return out
