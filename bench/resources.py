"""RSS and CPU of every process of the mesh, grouped by kind (psutil).

CPU is the process's user + system time over the window, as a percentage of one core;
RSS is the largest seen in the window (sampled every half second).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import psutil

# The kinds the targets speak of, then the rest of the mesh.
KINDS = ("service", "sidecar", "gateway", "nats", "otlp", "reflector", "floor")
INTERVAL = 0.5


@dataclass
class _Process:
    name: str
    kind: str
    proc: psutil.Process
    cpu_start: float = 0.0
    cpu_end: float = 0.0
    rss_max: int = 0
    pss: int = 0  # proportional set size at the end: shared pages split among sharers

    def cpu(self) -> float:
        times = self.proc.cpu_times()
        return float(times.user + times.system)

    def sample(self) -> None:
        with contextlib.suppress(psutil.Error):
            self.rss_max = max(self.rss_max, self.proc.memory_info().rss)
            self.cpu_end = self.cpu()

    def sample_pss(self) -> None:
        # Reads /proc/<pid>/smaps_rollup: once per window, not every half second.
        with contextlib.suppress(psutil.Error, AttributeError):
            self.pss = self.proc.memory_full_info().pss


@dataclass
class Sampler:
    """Samples ``programs`` (name -> (kind, pid)) from start() to stop()."""

    programs: Mapping[str, tuple[str, int]]
    _procs: list[_Process] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _started: float = 0.0
    _seconds: float = 0.0

    def start(self) -> None:
        for name, (kind, pid) in self.programs.items():
            with contextlib.suppress(psutil.Error):
                item = _Process(name, kind, psutil.Process(pid))
                item.cpu_start = item.cpu_end = item.cpu()
                self._procs.append(item)
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            for item in self._procs:
                item.sample()
            if self._stop.wait(INTERVAL):
                return

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        for item in self._procs:
            item.sample()
            item.sample_pss()
        self._seconds = time.monotonic() - self._started
        return self.summary()

    def summary(self) -> dict[str, Any]:
        """Per kind: processes, CPU % (sum and largest), RSS MB (largest and total), PSS MB
        (largest: RSS counts shared pages, such as Envoy's binary, in full in every process)."""
        seconds = max(self._seconds, 1e-9)
        out: dict[str, Any] = {"seconds": round(self._seconds, 2), "kinds": {}}
        for kind in (*KINDS, *sorted({p.kind for p in self._procs} - set(KINDS))):
            procs = [p for p in self._procs if p.kind == kind]
            if not procs:
                continue
            cpu = [100 * (p.cpu_end - p.cpu_start) / seconds for p in procs]
            rss = [p.rss_max / 2**20 for p in procs]
            pss = [p.pss / 2**20 for p in procs]
            out["kinds"][kind] = {
                "processes": len(procs),
                "cpu_percent_total": round(sum(cpu), 1),
                "cpu_percent_max": round(max(cpu), 1),
                "rss_mb_max": round(max(rss), 1),
                "rss_mb_total": round(sum(rss), 1),
                "pss_mb_max": round(max(pss), 1),
                "per_process": {
                    p.name: {
                        "cpu_percent": round(c, 1),
                        "rss_mb": round(r, 1),
                        "pss_mb": round(s, 1),
                    }
                    for p, c, r, s in zip(procs, cpu, rss, pss, strict=True)
                },
            }
        return out


def sample_for(programs: Mapping[str, tuple[str, int]], seconds: float) -> dict[str, Any]:
    sampler = Sampler(programs)
    sampler.start()
    time.sleep(seconds)
    return sampler.stop()
