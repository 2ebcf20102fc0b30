"""The issue's targets, each computed from one run's result and judged pass / fall short.

They are printed and recorded, never asserted: a busy machine must not fail a build.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Target:
    name: str
    measured: float
    limit: float
    unit: str
    at_most: bool  # True: measured <= limit passes; False: measured >= limit passes

    @property
    def passed(self) -> bool:
        if math.isnan(self.measured):
            return False
        return self.measured <= self.limit if self.at_most else self.measured >= self.limit

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


def _level(result: dict[str, Any], path: str, level: str) -> dict[str, Any]:
    for entry in result["unary"]["paths"]:
        if entry["name"] == path:
            level_stats: dict[str, Any] = entry["levels"][level]
            return level_stats
    raise KeyError(path)


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def evaluate(result: dict[str, Any]) -> list[Target]:
    gateway_1 = _level(result, "gateway", "1")
    floor_1 = _level(result, "floor-2", "1")
    gateway_sat = _level(result, "gateway", "saturation")
    direct_sat = _level(result, "direct", "saturation")
    saga = result["saga"]
    fixed = saga["fixed"]
    load = result["resources"]["saga"]["kinds"]
    return [
        Target(
            "gateway path p50 at 1 caller / bare 2-Envoy chain",
            _ratio(gateway_1["p50_ms"], floor_1["p50_ms"]),
            1.10,
            "x",
            at_most=True,
        ),
        Target(
            "gateway path rps at saturation / direct",
            _ratio(gateway_sat["rps"], direct_sat["rps"]),
            0.70,
            "x",
            at_most=False,
        ),
        Target(
            "direct GetProduct: service CPU per call at saturation",
            direct_sat.get("cpu_us_per_request", {}).get("service", math.nan),
            500.0,
            "us",
            at_most=True,
        ),
        Target(
            "orders confirmed per second, highest sustained rate",
            saga["sustained_confirmed_per_s"],
            150.0,
            "orders/s",
            at_most=False,
        ),
        Target(
            "the same, the project's goal",
            saga["sustained_confirmed_per_s"],
            300.0,
            "orders/s",
            at_most=False,
        ),
        Target(
            "CPU per confirmed order, all processes (every request traced)",
            saga["cpu_ms_per_order"]["total"],
            10.0,
            "ms",
            at_most=True,
        ),
        Target(
            f"p99 placed -> CONFIRMED at {fixed['offered_per_s']:.0f} orders/s",
            fixed["confirm_p99_ms"],
            100.0,
            "ms",
            at_most=True,
        ),
        Target(
            f"outbox relay lag p99 at {fixed['offered_per_s']:.0f} orders/s",
            fixed["relay_p99_ms"],
            20.0,
            "ms",
            at_most=True,
        ),
        Target(
            "service RSS (largest, under saga load)", load["service"]["rss_mb_max"], 80, "MB", True
        ),
        Target(
            "sidecar RSS (largest, under saga load)", load["sidecar"]["rss_mb_max"], 40, "MB", True
        ),
    ]
