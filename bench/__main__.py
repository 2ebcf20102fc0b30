"""`just bench [--quick] [--record]`: what each proxy hop costs, and how many orders a
second survive the whole path, measured side by side in one run on loopback.

The bench starts its own mesh (bench.mesh, through the project's runner), measures
unary path cost (bench.unary), resources at idle and under saga load (bench.resources),
saga throughput (bench.saga), stops the mesh, then prints every figure with the targets
(bench.targets) and writes the result as JSON with a plot. `--record` also keeps the
JSON and plot under bench/results/ and rewrites the results section of
docs/benchmarks.md. Every load is bounded in count and time; a full run takes about
five minutes, `--quick` well under one (it checks that every figure is produced).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from bench import ghz, machine, plot, report, resources, saga, targets, unary
from bench.mesh import BenchMesh, running
from bench.progress import Tracker
from shopmesh import traces
from shopmesh.envoy import admin
from shopmesh.topology import REPO_ROOT

RESULTS = REPO_ROOT / "bench" / "results"
DOCS = REPO_ROOT / "docs" / "benchmarks.md"
DEFAULT_VAR = REPO_ROOT / "var" / "bench"
MARKER = ".shopmesh-bench"  # only a directory holding this is wiped before a run
BEGIN, END = "<!-- bench:results:begin -->", "<!-- bench:results:end -->"


@dataclass(frozen=True)
class Mode:
    name: str
    unary: unary.Plan
    saga: saga.Plan
    idle_seconds: float


FULL = Mode(
    "full",
    unary.Plan(
        seconds=6,
        rounds=3,
        warmup_seconds=1.5,
        saturation=32,
        sweep_fractions=(0.1, 0.25, 0.5, 0.75, 1.0),
        sweep_seconds=3,
    ),
    saga.Plan(
        fixed_rate=50,
        fixed_seconds=10,
        ramp=(10, 20, 30, 50, 75, 100, 150, 200, 300, 400),
        ramp_seconds=8,
        settle_seconds=60,
        customers=20,
    ),
    idle_seconds=5,
)
QUICK = Mode(
    "quick",
    unary.Plan(
        seconds=0.4,
        rounds=1,
        warmup_seconds=0,
        saturation=16,
        sweep_fractions=(0.5,),
        sweep_seconds=0.4,
    ),
    saga.Plan(
        fixed_rate=20,
        fixed_seconds=2,
        ramp=(10,),
        ramp_seconds=1.5,
        settle_seconds=15,
        customers=2,
    ),
    idle_seconds=1,
)


def fresh_var(var: Path) -> Path:
    """An empty state directory for the mesh; refuses to wipe one the bench did not make."""
    if var.exists() and any(var.iterdir()) and not (var / MARKER).exists():
        raise SystemExit(f"{var} is not a bench directory (no {MARKER}); pick another --var")
    shutil.rmtree(var, ignore_errors=True)
    var.mkdir(parents=True)
    (var / MARKER).touch()
    return var


def measure(mode: Mode, var: Path, console: Console) -> dict[str, Any]:
    """Start the mesh, run every measurement, stop the mesh; the result (no targets yet)."""
    steps = 4 + unary.steps(mode.unary) + 2 + len(mode.saga.ramp) + 2
    result: dict[str, Any] = {}
    with Tracker(console, steps) as progress:
        progress.begin("starting the mesh")
        with running(var / "mesh") as mesh:
            protoset = mesh.var / "envoy" / "shopmesh.pb"
            progress.begin("customers and stock")
            customers = saga.register(mesh, mode.saga.customers)
            saga.stock_up(mesh, mode.saga.most_orders() + 100)
            load = saga.SagaLoad(mesh, mode.saga, protoset, customers)
            stock_before = load.stock()

            progress.begin("resources at idle")
            idle = resources.sample_for(mesh.pids(), mode.idle_seconds)
            result["unary"] = unary.run(mesh, customers[0].token, mode.unary, protoset, progress)

            sampler = resources.Sampler(mesh.pids())
            sampler.start()
            fixed = load.fixed(progress)
            under_load = sampler.stop()
            # The same step with one trace in ten: the gateway decides for the whole
            # path (services and sidecars follow the parent's decision).
            with sampling(mesh, SAMPLED_PERCENT):
                sampler = resources.Sampler(mesh.pids())
                sampler.start()
                spans_before = span_count(mesh)
                fixed_sampled = load.step(
                    "fixed-sampled", mode.saga.fixed_rate, mode.saga.fixed_seconds, progress
                )
                sampled_load = sampler.stop()
                sampled_traces = span_count(mesh, "/shop.order.v1.OrderService/PlaceOrder")
            ramp = load.ramp(progress)

            progress.begin("consistency checker")
            problems = load.consistency(stock_before)
            progress.begin("stopping the mesh")
    result["timings"] = progress.timings
    sustained = [s for s in ramp if s.sustained()]
    result["saga"] = {
        "call": saga.CALL,
        "product": saga.PRODUCT,
        "fixed": fixed.summary(),
        "ramp": [s.summary() for s in ramp],
        "sustained_offered_per_s": max((s.offered for s in sustained), default=0.0),
        "sustained_confirmed_per_s": max(
            (s.confirmed_per_second() for s in sustained), default=0.0
        ),
        "peak_confirmed_per_s": max(s.confirmed_per_second() for s in [fixed, *ramp]),
        "consistency": {
            "ok": not problems,
            "problems": problems[:50],
            "orders": len(fixed.orders) + sum(len(s.orders) for s in ramp),
            "customers": len(customers),
        },
    }
    result["saga"]["cpu_ms_per_order"] = cpu_per_order(under_load, len(fixed.confirmed))
    result["saga"]["sampled"] = {
        "percent": SAMPLED_PERCENT,
        "fixed": fixed_sampled.summary(),
        "cpu_ms_per_order": cpu_per_order(sampled_load, len(fixed_sampled.confirmed)),
        # PlaceOrder server spans of the step: about percent/100 x its orders.
        "traced_orders": sampled_traces - spans_before,
    }
    result["resources"] = {"idle": idle, "saga": under_load}
    return result


SAMPLED_PERCENT = 10.0


@contextlib.contextmanager
def sampling(mesh: BenchMesh, percent: float) -> Iterator[None]:
    """The gateway starts a trace for `percent` of requests (Envoy runtime, no restart)."""
    port = mesh.topology.gateway_admin_port
    admin.runtime_modify(port, {"tracing.random_sampling": f"{percent:g}"})
    try:
        yield
    finally:
        admin.runtime_modify(port, {"tracing.random_sampling": "100"})


def span_count(mesh: BenchMesh, name: str = "/shop.order.v1.OrderService/PlaceOrder") -> int:
    """PlaceOrder server spans the trace sink holds (services export within a second)."""
    time.sleep(1.5)
    return sum(
        1 for s in traces.read_spans(mesh.var / "traces") if s.name == name and s.kind == "server"
    )


def cpu_per_order(window: dict[str, Any], confirmed: int) -> dict[str, float]:
    """CPU milliseconds each confirmed order cost, per process kind, over the fixed step
    (placing, then waiting for every order to end): the saga's ceiling on this machine is
    about cores x 1000 / total."""
    seconds = window["seconds"]
    out = {
        kind: round(stats["cpu_percent_total"] / 100 * seconds * 1000 / max(confirmed, 1), 1)
        for kind, stats in window["kinds"].items()
    }
    out["total"] = round(sum(out.values()), 1)
    return out


def record(result: dict[str, Any], json_file: Path, png: Path, found: list[targets.Target]) -> None:
    """Keep the run under bench/results/ and show it in docs/benchmarks.md."""
    stamp = result["started_at"][:19].replace(":", "").replace("-", "")
    kept_json, kept_png = RESULTS / f"{stamp}.json", RESULTS / f"{stamp}.png"
    RESULTS.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(json_file, kept_json)
    shutil.copyfile(png, kept_png)
    text = DOCS.read_text()
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    section = report.markdown(result, found, os.path.relpath(kept_png, DOCS.parent))
    DOCS.write_text(text[:start] + "\n" + section + "\n" + text[end:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="just bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run, well under a minute")
    parser.add_argument(
        "--record", action="store_true", help="keep the result in bench/results/ and the docs"
    )
    parser.add_argument("--var", type=Path, default=DEFAULT_VAR, help="the bench's own state")
    parser.add_argument("--out", type=Path, help="result JSON (default: <var>/result.json)")
    args = parser.parse_args(argv)
    if args.quick and args.record:
        parser.error("--record keeps full runs only")
    mode = QUICK if args.quick else FULL
    console = Console()
    if not console.is_terminal and console.width < 160:
        console = Console(width=160)  # the tables are wide; logs and pipes have no width
    var = fresh_var(args.var.resolve())
    out: Path = (args.out or var / "result.json").resolve()

    result: dict[str, Any] = {
        "schema": 1,
        "mode": mode.name,
        "command": "just bench " + shlex.join(sys.argv[1:] if argv is None else argv),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine.describe(),
    }
    console.print(
        f"shopmesh bench ({mode.name}): load generator ghz {result['machine']['ghz']}, "
        f"{result['machine']['cores']} cores, load average "
        f"{result['machine']['load_average']['before']:.1f}"
    )
    started = time.monotonic()
    result.update(measure(mode, var, console))
    result["duration_s"] = round(time.monotonic() - started, 1)
    result["machine"]["load_average"]["after"] = os.getloadavg()[0]
    found = targets.evaluate(result)
    result["targets"] = [t.as_dict() for t in found]

    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    png = out.with_suffix(".png")
    plot.plot(result, png)
    report.print_tables(console, result, found)
    console.print(f"result: {out}\nplot: {png}  ({result['duration_s']:.0f} s)")
    if args.record:
        record(result, out, png, found)
        console.print(f"recorded in {RESULTS} and {DOCS}")
    return 0 if result["saga"]["consistency"]["ok"] else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ghz.GhzError as error:
        sys.exit(f"bench: {error}")
