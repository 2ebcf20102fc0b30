"""`just bench --quick` still works: it starts its mesh, measures, stops, and produces
every figure. It asserts that each figure is there, never how fast anything was."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench import ghz, unary
from shopmesh.topology import REPO_ROOT
from tests.support.envoymesh import run_processes

pytestmark = pytest.mark.integration

JUST = Path(sys.executable).parent / "just"


def figure(value: Any) -> bool:
    return isinstance(value, int | float) and not math.isnan(value) and value >= 0


@pytest.mark.timeout(240)
def test_quick_bench_produces_every_figure(tmp_path: Path) -> None:
    if not ghz.GHZ.exists() and shutil.which("go") is None:
        pytest.skip("no Go to install ghz with (`./dev tools` says so too)")
    var = tmp_path / "bench"
    done = subprocess.run(
        [str(JUST), "bench", "--quick", "--var", str(var)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=200,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert not run_processes(var.resolve()), "the bench left processes running"
    result = json.loads((var / "result.json").read_text())
    assert (var / "result.png").stat().st_size > 0

    paths = {p["name"]: p for p in result["unary"]["paths"]}
    assert sorted(paths) == sorted(unary.ROUTES)
    for path in paths.values():
        for level in ("1", "saturation"):
            stats = path["levels"][level]
            assert stats["ok"] > 0, (path["name"], level, stats)
            for key in ("rps", "p50_ms", "p90_ms", "p99_ms"):
                assert figure(stats[key]), (path["name"], level, key, stats)
            assert stats["cpu_us_per_request"].get("service", 0) > 0, stats
    assert {p["path"] for p in result["unary"]["sweep"]} == set(unary.ROUTES)

    saga = result["saga"]
    for step in [saga["fixed"], *saga["ramp"]]:
        assert step["confirmed"] > 0, step
        for key in ("confirmed_per_s", "confirm_p50_ms", "confirm_p99_ms"):
            assert figure(step[key]), (key, step)
        for key in ("relay_p50_ms", "relay_p99_ms"):
            assert figure(step[key]), (key, step)
    assert saga["consistency"]["ok"], saga["consistency"]["problems"]
    assert saga["cpu_ms_per_order"]["total"] > 0
    # The same fixed step again, with the gateway sampling one trace in ten.
    sampled = saga["sampled"]
    assert sampled["percent"] == 10
    assert sampled["fixed"]["confirmed"] > 0, sampled
    assert sampled["cpu_ms_per_order"]["total"] > 0
    assert 0 <= sampled["traced_orders"] < sampled["fixed"]["orders"], sampled

    for window in ("idle", "saga"):
        kinds = result["resources"][window]["kinds"]
        for kind in ("service", "sidecar", "gateway", "nats"):
            assert figure(kinds[kind]["cpu_percent_total"]), (window, kind)
            assert kinds[kind]["rss_mb_max"] > 0, (window, kind)

    assert len(result["targets"]) == 10
    for target in result["targets"]:
        assert figure(target["measured"]), target
