"""What each proxy hop costs: one read RPC (InventoryService/GetProduct) over five paths.

    direct     client -> inventory-1
    floor-1    client -> bare Envoy -> inventory-1
    sidecar    client -(mTLS)-> inventory-1's sidecar -> inventory-1
    floor-2    client -> bare Envoy -> bare Envoy -> inventory-1
    gateway    client -> gateway (rate limit, transcoder, JWT, gRPC stats) -(mTLS)->
               sidecar (fault filter) -> inventory-1        <- the real user path

Each path is measured at 1 caller and at saturation (many callers on one connection),
then at fixed offered rates for the latency-against-load plot. The paths take turns
within one run, so a busy machine slows them all alike and the ratios still hold.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import floor, ghz, resources
from bench.mesh import BenchMesh
from bench.progress import Tracker
from shopmesh.envoy.layout import GATEWAY, Layout

CALL = "shop.inventory.v1.InventoryService/GetProduct"
ROUTES = ("direct", "floor-1", "sidecar", "floor-2", "gateway")
DATA = '{"product_id": "sku-espresso"}'


@dataclass(frozen=True)
class Route:
    name: str
    envoy_hops: int
    description: str
    target: ghz.Target


def paths(mesh: BenchMesh, token: str) -> list[Route]:
    topo = mesh.topology
    inventory = topo.service(floor.TARGET_SERVICE).instances[0]
    front, back = floor.hops(topo)
    layout = Layout(mesh.var)
    # The sidecar accepts the gateway's certificate: the client stands where it stands.
    as_gateway = ghz.Tls(layout.ca, layout.cert(GATEWAY), layout.key(GATEWAY))
    bearer = {"authorization": f"Bearer {token}"}
    return [
        Route("direct", 0, "client -> service", ghz.Target(inventory.app_addr)),
        Route(
            "floor-1",
            1,
            "client -> bare Envoy -> service",
            ghz.Target(f"127.0.0.1:{back.port}"),
        ),
        Route(
            "sidecar",
            1,
            "client -mTLS-> sidecar -> service",
            ghz.Target(f"127.0.0.1:{inventory.ingress_port}", tls=as_gateway),
        ),
        Route(
            "floor-2",
            2,
            "client -> bare Envoy -> bare Envoy -> service",
            ghz.Target(f"127.0.0.1:{front.port}"),
        ),
        Route(
            "gateway",
            2,
            "client -> gateway (JWT, rate limit, stats) -mTLS-> sidecar -> service",
            ghz.Target(mesh.gateway, metadata=bearer),
        ),
    ]


@dataclass(frozen=True)
class Plan:
    seconds: float  # each path at each level, split over the rounds
    rounds: int
    warmup_seconds: float
    saturation: int  # callers in flight at saturation
    sweep_fractions: tuple[float, ...]  # offered rates, as fractions of direct's saturation
    sweep_seconds: float


def measure(
    protoset: Path,
    path: Route,
    concurrency: int,
    seconds: float,
    rps: float = 0,
) -> ghz.Stats:
    args = ghz.command(
        path.target, CALL, DATA, protoset, concurrency=concurrency, seconds=seconds, rps=rps
    )
    return ghz.run(args, seconds)


def cpu_per_request(window: dict[str, Any], requests: int) -> dict[str, float]:
    """CPU microseconds per successful call, by process kind (the client, ghz, not
    included): where each path spends its time, tracing export included."""
    seconds = window["seconds"]
    out = {
        kind: round(stats["cpu_percent_total"] / 100 * seconds * 1e6 / max(requests, 1))
        for kind, stats in window["kinds"].items()
    }
    return {kind: us for kind, us in out.items() if us > 0}


def combine(rounds: list[tuple[ghz.Stats, dict[str, float]]]) -> dict[str, Any]:
    """One figure per path from its rounds: counts summed, rates and CPU averaged, and the
    median of each round's percentiles (robust to one round hit by a burst elsewhere)."""
    stats = [s for s, _ in rounds]
    kinds = {kind for _, cpu in rounds for kind in cpu}
    return {
        "rounds": len(rounds),
        "count": sum(s.count for s in stats),
        "ok": sum(s.ok for s in stats),
        "errors": sum(s.errors for s in stats),
        "rps": statistics.mean(s.rps for s in stats),
        "p50_ms": statistics.median(s.p50_ms for s in stats),
        "p90_ms": statistics.median(s.p90_ms for s in stats),
        "p99_ms": statistics.median(s.p99_ms for s in stats),
        "mean_ms": statistics.mean(s.mean_ms for s in stats),
        "duration_s": sum(s.duration_s for s in stats),
        "error_kinds": {k: v for s in stats for k, v in s.error_kinds.items()},
        "cpu_us_per_request": {
            kind: round(statistics.mean(cpu.get(kind, 0) for _, cpu in rounds)) for kind in kinds
        },
        "per_round": [
            {k: v for k, v in s.as_dict().items() if k in ("rps", "p50_ms", "p99_ms")}
            for s in stats
        ],
    }


def steps(plan: Plan) -> int:
    """How many measurements :func:`run` makes (for the progress bar)."""
    measured = 2 * plan.rounds + len(plan.sweep_fractions)
    return len(ROUTES) * (measured + bool(plan.warmup_seconds))


def run(
    mesh: BenchMesh, token: str, plan: Plan, protoset: Path, progress: Tracker
) -> dict[str, Any]:
    """Every path at 1 caller and at saturation, then the offered-load sweep."""
    routes = paths(mesh, token)
    for path in routes if plan.warmup_seconds else ():  # connections, TLS, first requests
        progress.begin(f"warm-up {path.name}")
        measure(protoset, path, plan.saturation, plan.warmup_seconds)
    levels: dict[str, dict[str, dict[str, Any]]] = {p.name: {} for p in routes}
    for label, concurrency in (("1", 1), ("saturation", plan.saturation)):
        rounds: dict[str, list[tuple[ghz.Stats, dict[str, float]]]] = {p.name: [] for p in routes}
        # The paths take turns, round after round: a burst of load from elsewhere on the
        # machine then hits every path alike instead of one.
        for n in range(plan.rounds):
            for path in routes:
                progress.begin(f"{path.name} at {concurrency} in flight ({n + 1}/{plan.rounds})")
                sampler = resources.Sampler(mesh.pids())
                sampler.start()
                stats = measure(protoset, path, concurrency, plan.seconds / plan.rounds)
                rounds[path.name].append((stats, cpu_per_request(sampler.stop(), stats.ok)))
        for path in routes:
            combined = levels[path.name][label] = combine(rounds[path.name])
            progress.say(
                f"{path.name:8} {concurrency:3} in flight: {combined['rps']:7.0f} rps,"
                f" p50 {combined['p50_ms']:6.2f} ms, p99 {combined['p99_ms']:6.2f} ms"
                + (f", {combined['errors']} errors" if combined["errors"] else "")
            )
    direct_max = levels["direct"]["saturation"]["rps"]
    sweep: list[dict[str, Any]] = []
    for fraction in plan.sweep_fractions:
        offered = max(50.0, round(direct_max * fraction, -1))
        for path in routes:
            progress.begin(f"{path.name} at {offered:.0f} rps offered")
            stats = measure(protoset, path, plan.saturation, plan.sweep_seconds, rps=offered)
            sweep.append({"path": path.name, "offered_rps": offered, **stats.as_dict()})
    return {
        "call": CALL,
        "client": "ghz",
        "paths": [
            {
                "name": p.name,
                "envoy_hops": p.envoy_hops,
                "description": p.description,
                "levels": levels[p.name],
            }
            for p in routes
        ],
        "saturation_in_flight": plan.saturation,
        "sweep": sweep,
    }
