"""Latency against offered load, from a result JSON: `python -m bench.plot RESULT.json OUT.png`.

Left, the unary read on each path at fixed offered rates (p50 solid, p99 dashed); right,
the saga's time from placing an order to CONFIRMED at each offered rate.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt


def plot(result: dict[str, Any], out: Path) -> None:
    fig, (unary, saga) = plt.subplots(1, 2, figsize=(12, 4.5), constrained_layout=True)

    sweep = result["unary"]["sweep"]
    for name in dict.fromkeys(point["path"] for point in sweep):
        points = sorted((p for p in sweep if p["path"] == name), key=lambda p: p["offered_rps"])
        offered = [p["offered_rps"] for p in points]
        (line,) = unary.plot(offered, [p["p50_ms"] for p in points], marker="o", label=name)
        p99 = [p["p99_ms"] for p in points]
        unary.plot(offered, p99, linestyle="--", marker="x", color=line.get_color())
    unary.set_yscale("log")
    unary.set_xlabel("offered load (requests/s)")
    unary.set_ylabel("latency (ms, log): p50 solid, p99 dashed")
    unary.set_title(f"{result['unary']['call'].split('/')[-1]}, by path (ghz)")
    unary.grid(True, which="both", alpha=0.3)
    unary.legend()

    steps = sorted(
        [result["saga"]["fixed"], *result["saga"]["ramp"]], key=lambda s: s["offered_per_s"]
    )
    offered = [s["offered_per_s"] for s in steps]
    saga.plot(offered, [s["confirm_p50_ms"] for s in steps], marker="o", label="p50")
    saga.plot(offered, [s["confirm_p99_ms"] for s in steps], marker="o", label="p99")
    saga.set_yscale("log")
    saga.set_xlabel("offered load (orders/s)")
    saga.set_ylabel("placed -> CONFIRMED (ms, log)")
    saga.set_title("Saga, through the gateway")
    saga.grid(True, which="both", alpha=0.3)
    saga.legend()

    fig.suptitle(
        f"shopmesh bench {result['started_at'][:10]}, {result['machine']['cores']} cores, "
        f"load average {result['machine']['load_average']['before']:.1f}"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main() -> None:
    source, out = Path(sys.argv[1]), Path(sys.argv[2])
    plot(json.loads(source.read_text()), out)


if __name__ == "__main__":
    main()
