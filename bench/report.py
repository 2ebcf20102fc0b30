"""A run's result as terminal tables (rich) and as the Markdown of docs/benchmarks.md."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.targets import Target

# Each proxied path, and the bare path with its number of Envoys.
FLOORS = {"sidecar": "floor-1", "gateway": "floor-2"}
RESOURCE_KINDS = ("service", "sidecar", "gateway", "nats")


def _num(value: float, digits: int = 1) -> str:
    return "-" if math.isnan(value) else f"{value:,.{digits}f}"


def _paths(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in result["unary"]["paths"]}


def unary_rows(result: dict[str, Any]) -> Iterator[list[str]]:
    paths = _paths(result)
    direct_sat = paths["direct"]["levels"]["saturation"]["rps"]
    for name, path in paths.items():
        one, sat = path["levels"]["1"], path["levels"]["saturation"]
        floor = FLOORS.get(name)
        over_floor = (
            _num(one["p50_ms"] / paths[floor]["levels"]["1"]["p50_ms"], 2) + f" x {floor}"
            if floor
            else ""
        )
        yield [
            name,
            str(path["envoy_hops"]),
            _num(one["rps"], 0),
            _num(one["p50_ms"], 2),
            _num(one["p90_ms"], 2),
            _num(one["p99_ms"], 2),
            _num(sat["rps"], 0),
            _num(sat["p50_ms"], 2),
            _num(sat["p90_ms"], 2),
            _num(sat["p99_ms"], 2),
            over_floor,
            _num(sat["rps"] / direct_sat, 2) if direct_sat else "-",
        ]


UNARY_HEADER = [
    "path",
    "Envoys",
    "1 caller rps",
    "p50 ms",
    "p90 ms",
    "p99 ms",
    "saturated rps",
    "p50 ms",
    "p90 ms",
    "p99 ms",
    "p50 at 1 caller vs floor",
    "rps vs direct",
]


CPU_KINDS = ("service", "sidecar", "gateway", "floor", "otlp")


def cpu_rows(result: dict[str, Any]) -> Iterator[list[str]]:
    for name, path in _paths(result).items():
        cpu = path["levels"]["saturation"].get("cpu_us_per_request", {})
        cells = [_num(cpu.get(kind, 0), 0) for kind in CPU_KINDS]
        yield [name, *cells, _num(sum(cpu.values()), 0)]


CPU_HEADER = ["path", *(f"{kind} us" for kind in CPU_KINDS), "all us"]


def saga_rows(result: dict[str, Any]) -> Iterator[list[str]]:
    saga = result["saga"]
    sampled = [saga["sampled"]["fixed"]] if "sampled" in saga else []
    for step in [saga["fixed"], *sampled, *saga["ramp"]]:
        yield [
            step["label"],
            _num(step["offered_per_s"], 0),
            _num(step["place"]["rps"], 1),
            f"{step['confirmed']}/{step['orders']}",
            _num(step["confirmed_per_s"], 1),
            _num(step["confirm_p50_ms"], 0),
            _num(step["confirm_p99_ms"], 0),
            _num(step["relay_p50_ms"], 1),
            _num(step["relay_p99_ms"], 1),
            "yes" if step["sustained"] else "no",
        ]


SAGA_HEADER = [
    "step",
    "offered /s",
    "placed /s",
    "confirmed",
    "confirmed /s",
    "to CONFIRMED p50 ms",
    "p99 ms",
    "relay lag p50 ms",
    "p99 ms",
    "sustained",
]


def resource_rows(result: dict[str, Any]) -> Iterator[list[str]]:
    idle, load = result["resources"]["idle"]["kinds"], result["resources"]["saga"]["kinds"]
    for kind in [*RESOURCE_KINDS, *(k for k in load if k not in RESOURCE_KINDS)]:
        if kind not in load:
            continue
        yield [
            kind,
            str(load[kind]["processes"]),
            _num(idle.get(kind, {}).get("cpu_percent_total", math.nan)),
            _num(idle.get(kind, {}).get("rss_mb_max", math.nan)),
            _num(load[kind]["cpu_percent_total"]),
            _num(load[kind]["cpu_percent_max"]),
            _num(load[kind]["rss_mb_max"]),
            _num(load[kind]["pss_mb_max"]),
            _num(load[kind]["rss_mb_total"]),
        ]


RESOURCE_HEADER = [
    "kind",
    "processes",
    "idle CPU % (all)",
    "idle RSS MB (largest)",
    "saga CPU % (all)",
    "CPU % (busiest)",
    "RSS MB (largest)",
    "PSS MB (largest)",
    "RSS MB (all)",
]


def cpu_line(result: dict[str, Any]) -> str:
    saga = result["saga"]
    cores = result["machine"]["cores"] or 1
    lines = []
    for label, cpu in [
        ("the fixed step (every request traced)", saga["cpu_ms_per_order"]),
        *(
            [
                (
                    f"the fixed step at {saga['sampled']['percent']:g} % sampling "
                    f"({saga['sampled']['traced_orders']} of {saga['sampled']['fixed']['orders']} "
                    "orders traced)",
                    saga["sampled"]["cpu_ms_per_order"],
                )
            ]
            if "sampled" in saga
            else []
        ),
    ]:
        parts = ", ".join(f"{kind} {ms:.1f}" for kind, ms in cpu.items() if kind != "total")
        lines.append(
            f"CPU per confirmed order in {label}: {cpu['total']:.1f} ms ({parts}); "
            f"ceiling on {cores} cores about {cores * 1000 / max(cpu['total'], 1e-9):.0f} orders/s"
        )
    return "\n\n".join(lines)


def target_rows(targets: list[Target]) -> Iterator[list[str]]:
    for t in targets:
        sign = "<=" if t.at_most else ">="
        yield [
            t.name,
            f"{_num(t.measured, 2)} {t.unit}",
            f"{sign} {t.limit:g} {t.unit}",
            "pass" if t.passed else "falls short",
        ]


TARGET_HEADER = ["target", "measured", "wanted", "verdict"]


def print_tables(console: Console, result: dict[str, Any], targets: list[Target]) -> None:
    def table(title: str, header: list[str], rows: Iterator[list[str]]) -> Table:
        out = Table(title=title, title_justify="left")
        for i, column in enumerate(header):
            out.add_column(column, justify="left" if i == 0 else "right")
        for row in rows:
            out.add_row(*row)
        return out

    unary = result["unary"]
    console.print(
        table(
            f"{unary['call']} via ghz, 1 caller and {unary['saturation_in_flight']} in flight",
            UNARY_HEADER,
            unary_rows(result),
        )
    )
    console.print(
        table("CPU per call at saturation (all processes of a kind)", CPU_HEADER, cpu_rows(result))
    )
    console.print(table("Saga: orders placed through the gateway", SAGA_HEADER, saga_rows(result)))
    checker = result["saga"]["consistency"]
    verdict = "[green]green" if checker["ok"] else f"[red]{len(checker['problems'])} problems"
    console.print(f"consistency checker: {verdict}")
    console.print(cpu_line(result))
    console.print(table("Resources (psutil)", RESOURCE_HEADER, resource_rows(result)))
    rows = list(target_rows(targets))
    styled = [[*r[:3], f"[green]{r[3]}" if r[3] == "pass" else f"[red]{r[3]}"] for r in rows]
    console.print(table("Targets", TARGET_HEADER, iter(styled)))


def _markdown_table(header: list[str], rows: Iterator[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def markdown(result: dict[str, Any], targets: list[Target], plot: str) -> str:
    """The results section of docs/benchmarks.md."""
    machine = result["machine"]
    checker = result["saga"]["consistency"]
    load = machine["load_average"]
    return "\n".join(
        [
            f"Recorded {result['started_at'][:16].replace('T', ' ')} UTC with "
            f"`{result['command']}` ({result['mode']} mode, {result['duration_s']:.0f} s), "
            f"commit `{machine['commit']}`.",
            "",
            f"Machine: {machine['cpu']}, {machine['cores']} cores, "
            f"{machine['memory_gb']:.0f} GB, {machine['os']}; Python {machine['python']}, "
            f"Envoy {machine['envoy']}, nats-server {machine['nats_server']}, "
            f"ghz {machine['ghz']}. Load average (1 min): {load['before']:.1f} before the run, "
            f"{load['after']:.1f} after.",
            "",
            "**Targets**",
            "",
            _markdown_table(TARGET_HEADER, target_rows(targets)),
            "",
            f"**Unary path cost**: `{result['unary']['call']}`, client ghz (Go), "
            f"1 caller and {result['unary']['saturation_in_flight']} in flight on one "
            "connection.",
            "",
            _markdown_table(UNARY_HEADER, unary_rows(result)),
            "",
            "CPU microseconds per call at saturation, by process kind (psutil; the client "
            "not included; `otlp` is the trace sink receiving the spans):",
            "",
            _markdown_table(CPU_HEADER, cpu_rows(result)),
            "",
            "**Saga throughput**: PlaceOrder through the gateway at a fixed offered rate, then "
            "rising rates until one is not sustained.",
            "",
            _markdown_table(SAGA_HEADER, saga_rows(result)),
            "",
            f"Consistency checker after the run: "
            f"{'green' if checker['ok'] else str(len(checker['problems'])) + ' problems'} "
            f"({checker['orders']} orders, {checker['customers']} customers). "
            + cpu_line(result)
            + ".",
            "",
            "**Resources** (idle, then during the fixed-rate saga step)",
            "",
            _markdown_table(RESOURCE_HEADER, resource_rows(result)),
            "",
            f"![latency against offered load]({plot})",
        ]
    )
