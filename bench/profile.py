"""`python -m bench.profile`: where the saga's CPU goes, by service and by layer.

Starts the bench's mesh (bench.mesh), places orders through the gateway at a fixed rate
(bench.saga) while `py-spy record --gil` samples every service process, then prints, per
service, the share of its samples in each layer (database, gRPC, bus, tracing,
validation, logging, the service's own code) and its hottest frames. The raw profiles
stay in `<var>/profiles/` (`py-spy`'s raw format: one stack and a count a line, ready for
flamegraph.pl or speedscope). Bounded: one load step of `--seconds`, loopback only.
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench.__main__ import DEFAULT_VAR, fresh_var
from bench.mesh import running
from bench.progress import Tracker
from bench.saga import Plan, SagaLoad, register, stock_up

# First match wins, tried against each frame from the innermost out: a sample belongs to
# the innermost layer it is in (time in sqlite3 under SQLAlchemy is the database's).
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("validation", ("protovalidate", "bad_request (", "nul_fields (")),
    ("tracing", ("opentelemetry",)),
    ("logging", ("logging/", "shopmesh/logs.py")),
    ("database", ("sqlalchemy", "sqlite3", "psycopg", "shopmesh/db.py", "storage/")),
    ("bus", ("nats/", "shopmesh/bus.py")),
    ("grpc", ("grpc", "cygrpc")),
    ("protobuf", ("google/protobuf",)),
    ("service code", ("services/", "shopmesh/")),
    ("asyncio", ("asyncio/",)),
)


def layer_of(stack: list[str]) -> str:
    for frame in reversed(stack):
        for layer, needles in LAYERS:
            if any(needle in frame for needle in needles):
                return layer
    return "other"


def summarize(raw: Path) -> tuple[int, collections.Counter[str], collections.Counter[str]]:
    """Samples in all, per layer, and per innermost frame."""
    layers: collections.Counter[str] = collections.Counter()
    leaves: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack_text, _, count_text = line.rpartition(" ")
        if not stack_text or not count_text.isdigit():
            continue
        count = int(count_text)
        stack = [f for f in stack_text.split(";") if not f.startswith("process ")]
        stack = [f for f in stack if not f.startswith("thread ")]
        if not stack:
            continue
        total += count
        layers[layer_of(stack)] += count
        leaves[stack[-1]] += count
    return total, layers, leaves


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("--rate", type=float, default=30, help="orders/s offered")
    parser.add_argument("--seconds", type=float, default=15, help="length of the load")
    parser.add_argument("--var", type=Path, default=DEFAULT_VAR.parent / "profile")
    args = parser.parse_args(argv)
    console = Console(width=max(Console().width, 120))
    var = fresh_var(args.var.resolve())
    profiles = var / "profiles"
    profiles.mkdir()
    plan = Plan(args.rate, args.seconds, (), 1, 60, 10)
    with Tracker(console, 4) as progress, running(var / "mesh") as mesh:
        progress.begin("customers and stock")
        customers = register(mesh, plan.customers)
        stock_up(mesh, plan.most_orders() + 100)
        load = SagaLoad(mesh, plan, mesh.var / "envoy" / "shopmesh.pb", customers)
        services = {n: pid for n, (kind, pid) in mesh.pids().items() if kind == "service"}
        spies = {
            name: subprocess.Popen(
                [
                    "py-spy",
                    "record",
                    "--pid",
                    str(pid),
                    "--gil",
                    "--rate",
                    "250",
                    "--format",
                    "raw",
                    "--full-filenames",
                    "--duration",
                    str(round(args.seconds + 3)),
                    "--output",
                    str(profiles / f"{name}.txt"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for name, pid in services.items()
        }
        step = load.fixed(progress)
        progress.begin("waiting for py-spy")
        for spy in spies.values():
            spy.wait(timeout=args.seconds + 60)
    summary = step.summary()
    console.print(
        f"{summary['confirmed']}/{summary['orders']} confirmed at {args.rate:.0f}/s offered;"
        f" to CONFIRMED p50 {summary['confirm_p50_ms']:.0f} ms"
        f" p99 {summary['confirm_p99_ms']:.0f} ms"
    )
    table = Table(title="share of each service's samples (py-spy --gil), by layer")
    names = sorted(spies)
    all_layers = [layer for layer, _ in LAYERS] + ["other"]
    table.add_column("layer")
    for name in names:
        table.add_column(name, justify="right")
    results = {name: summarize(profiles / f"{name}.txt") for name in names}
    table.add_row("samples", *(str(results[n][0]) for n in names))
    for layer in all_layers:
        table.add_row(
            layer,
            *(f"{100 * results[n][1][layer] / max(results[n][0], 1):.0f} %" for n in names),
        )
    console.print(table)
    for name in names:
        total, _, leaves = results[name]
        console.print(f"[bold]{name}[/bold]: hottest frames")
        for frame, count in leaves.most_common(8):
            console.print(f"  {100 * count / max(total, 1):5.1f} %  {frame[:110]}")
    console.print(f"raw profiles: {profiles}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
