"""Per-service RPC figures from the services' OpenTelemetry histograms.

Each instance exports its cumulative `rpc.server.duration` histogram every few seconds.
The sink keeps the previous export of every series, turns the pair into a window (the
calls in between), and merges each service's latest windows: requests per second, error
rate and p50/p99 latency. `shopmesh status` shows them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

HISTOGRAM = "rpc.server.duration"
OK = 0  # gRPC status code


@dataclass
class Window:
    """Calls seen by one instance between two exports."""

    seconds: float
    count: int = 0
    errors: int = 0
    bounds: tuple[float, ...] = ()
    buckets: list[int] = field(default_factory=list)

    def add(self, count: int, errors: int, bounds: tuple[float, ...], buckets: list[int]) -> None:
        if not self.buckets:
            self.bounds, self.buckets = bounds, [0] * len(buckets)
        if bounds != self.bounds:
            return  # a different bucket layout cannot be merged; never the case here
        self.count += count
        self.errors += errors
        self.buckets = [a + b for a, b in zip(self.buckets, buckets, strict=True)]


def quantile(bounds: tuple[float, ...], buckets: list[int], q: float) -> float | None:
    """Upper bound of the bucket holding quantile `q` (the last bound for the overflow)."""
    total = sum(buckets)
    if not total:
        return None
    rank = q * total
    seen = 0
    for i, count in enumerate(buckets):
        seen += count
        if seen >= rank:
            return bounds[min(i, len(bounds) - 1)] if bounds else None
    return bounds[-1] if bounds else None


class Tracker:
    """Turns successive cumulative exports into per-service windows."""

    def __init__(self) -> None:
        # (instance, method, code) -> (time ns, count, buckets)
        self._last: dict[tuple[str, str, int], tuple[int, int, list[int]]] = {}
        # instance -> (service, time ns of its latest window, window)
        self._windows: dict[str, tuple[str, int, Window]] = {}

    def observe(self, service: str, instance: str, points: list[dict[str, Any]]) -> None:
        """Points: {method, code, time_ns, count, bounds, buckets} from one export."""
        window: Window | None = None
        latest = 0
        for point in points:
            key = (instance, point["method"], point["code"])
            previous = self._last.get(key)
            self._last[key] = (point["time_ns"], point["count"], point["buckets"])
            if previous is None or point["count"] < previous[1]:
                continue  # first sight, or the instance restarted: no window yet
            seconds = (point["time_ns"] - previous[0]) / 1e9
            if seconds <= 0:
                continue
            window = window or Window(seconds=seconds)
            count = point["count"] - previous[1]
            buckets = [a - b for a, b in zip(point["buckets"], previous[2], strict=True)]
            window.add(count, count if point["code"] != OK else 0, tuple(point["bounds"]), buckets)
            latest = max(latest, point["time_ns"])
        if window is not None:
            self._windows[instance] = (service, latest, window)

    def summary(self, now_ns: int, max_age_s: float = 30) -> dict[str, dict[str, float | None]]:
        """service -> rps, error_rate, p50_ms, p99_ms over its instances' latest windows."""
        merged: dict[str, list[Window]] = {}
        for service, at, window in self._windows.values():
            if (now_ns - at) / 1e9 <= max_age_s:
                merged.setdefault(service, []).append(window)
        out: dict[str, dict[str, float | None]] = {}
        for service, windows in sorted(merged.items()):
            total = Window(seconds=max(w.seconds for w in windows))
            for w in windows:
                if w.buckets:
                    total.add(w.count, w.errors, w.bounds, w.buckets)
            rps = sum(w.count / w.seconds for w in windows)
            out[service] = {
                "rps": round(rps, 2),
                "error_rate": round(total.errors / total.count, 4) if total.count else 0.0,
                "p50_ms": quantile(total.bounds, total.buckets, 0.50),
                "p99_ms": quantile(total.bounds, total.buckets, 0.99),
            }
        return out
