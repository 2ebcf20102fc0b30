"""Per-service RPC figures from cumulative histogram exports."""

from __future__ import annotations

import pytest

from shopmesh.rpcstats import Tracker, quantile

pytestmark = pytest.mark.unit

BOUNDS = [1.0, 5.0, 10.0, 50.0]
SECOND = 1_000_000_000


def point(method: str, code: int, t: float, count: int, buckets: list[int]) -> dict[str, object]:
    return {
        "method": method,
        "code": code,
        "time_ns": int(t * SECOND),
        "count": count,
        "bounds": BOUNDS,
        "buckets": buckets,
    }


def test_quantile_is_the_upper_bound_of_the_bucket_holding_it() -> None:
    buckets = [50, 40, 9, 1, 0]
    assert quantile(tuple(BOUNDS), buckets, 0.5) == 1.0
    assert quantile(tuple(BOUNDS), buckets, 0.9) == 5.0
    assert quantile(tuple(BOUNDS), buckets, 0.99) == 10.0
    assert quantile(tuple(BOUNDS), [0, 0, 0, 0, 0], 0.5) is None


def test_a_window_between_two_exports_gives_rate_errors_and_latency() -> None:
    tracker = Tracker()
    tracker.observe("order", "order-1", [point("/Get", 0, 10, 100, [100, 0, 0, 0, 0])])
    assert tracker.summary(int(10 * SECOND)) == {}  # one export is no window yet
    tracker.observe(
        "order",
        "order-1",
        [
            point("/Get", 0, 15, 140, [110, 30, 0, 0, 0]),
            point("/Place", 13, 15, 10, [0, 0, 0, 10, 0]),
        ],
    )
    # /Place appears for the first time: only /Get's 40 calls in 5 s count.
    assert tracker.summary(int(15 * SECOND))["order"] == {
        "rps": 8.0,
        "error_rate": 0.0,
        "p50_ms": 5.0,
        "p99_ms": 5.0,
    }
    tracker.observe(
        "order",
        "order-1",
        [
            point("/Get", 0, 20, 150, [120, 30, 0, 0, 0]),
            point("/Place", 13, 20, 20, [0, 0, 0, 20, 0]),
        ],
    )
    stats = tracker.summary(int(20 * SECOND))["order"]
    assert stats["rps"] == 4.0  # 20 calls in 5 s
    assert stats["error_rate"] == 0.5
    assert stats["p99_ms"] == 50.0


def test_instances_add_up_and_stale_ones_drop_out() -> None:
    tracker = Tracker()
    for instance, calls in (("payment-1", 10), ("payment-2", 30)):
        tracker.observe("payment", instance, [point("/Get", 0, 0, 0, [0, 0, 0, 0, 0])])
        tracker.observe("payment", instance, [point("/Get", 0, 10, calls, [calls, 0, 0, 0, 0])])
    assert tracker.summary(int(10 * SECOND))["payment"]["rps"] == 4.0
    assert tracker.summary(int(100 * SECOND)) == {}


def test_a_restarted_instance_starts_a_new_series() -> None:
    tracker = Tracker()
    tracker.observe("user", "user-1", [point("/Get", 0, 0, 500, [500, 0, 0, 0, 0])])
    tracker.observe("user", "user-1", [point("/Get", 0, 5, 3, [3, 0, 0, 0, 0])])  # counts reset
    assert tracker.summary(int(5 * SECOND)) == {}
