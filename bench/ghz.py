"""ghz, the load generator: a Go gRPC client, so the client is never the Python bottleneck.

Installed by `just tools` at a pinned version into .tools/bin (`go install
github.com/bojand/ghz/cmd/ghz@<version>`). Each run is bounded by a request count and a
wall-clock limit; the JSON report is reduced to :class:`Stats`.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from shopmesh.topology import REPO_ROOT

GHZ = REPO_ROOT / ".tools" / "bin" / "ghz"
# Keep in step with the Justfile's tools recipe.
GHZ_VERSION = "v0.120.0"


class GhzError(RuntimeError):
    pass


def version() -> str:
    """The module version the binary was built from (`go install` leaves `ghz -v` = dev)."""
    if not GHZ.exists():
        raise GhzError(f"{GHZ} not found: run `./dev tools` (needs Go) to install ghz")
    try:
        out = subprocess.run(
            ["go", "version", "-m", str(GHZ)], capture_output=True, text=True, check=False
        ).stdout
    except FileNotFoundError:  # no Go here: the binary works, its version is unknown
        return "unknown"
    found = re.search(r"^\s*mod\s+github.com/bojand/ghz\s+(\S+)", out, re.MULTILINE)
    return found.group(1) if found else "unknown"


@dataclass(frozen=True)
class Tls:
    """mTLS as a mesh peer: the CA, and a client certificate the server accepts."""

    ca: Path
    cert: Path
    key: Path


@dataclass(frozen=True)
class Target:
    address: str
    tls: Tls | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Stats:
    """One load run: throughput and latency (milliseconds) of the successful calls."""

    count: int
    ok: int
    errors: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    duration_s: float
    error_kinds: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _percentile(report: Mapping[str, Any], wanted: int) -> float:
    for entry in report.get("latencyDistribution") or []:
        if entry["percentage"] == wanted:
            return float(entry["latency"]) / 1e6
    return float("nan")


def parse(report: Mapping[str, Any]) -> Stats:
    """ghz's JSON report (latencies in nanoseconds) -> Stats."""
    codes: dict[str, int] = dict(report.get("statusCodeDistribution") or {})
    ok = int(codes.get("OK", 0))
    count = int(report.get("count", 0))
    return Stats(
        count=count,
        ok=ok,
        errors=count - ok,
        rps=float(report.get("rps", 0.0)),
        p50_ms=_percentile(report, 50),
        p90_ms=_percentile(report, 90),
        p99_ms=_percentile(report, 99),
        mean_ms=float(report.get("average", 0)) / 1e6,
        duration_s=float(report.get("total", 0)) / 1e9,
        error_kinds={k: int(v) for k, v in (report.get("errorDistribution") or {}).items()},
    )


def command(
    target: Target,
    call: str,
    data: str,
    protoset: Path,
    *,
    concurrency: int,
    seconds: float,
    total: int = 0,
    rps: float = 0,
    templates: bool = False,
    cpus: int = 1,
) -> list[str]:
    args = [
        str(GHZ),
        f"--protoset={protoset}",
        f"--call={call}",
        f"--data={data}",
        f"--concurrency={concurrency}",
        "--timeout=10s",
        "--connections=1",
        # One core for the client: it must not take the mesh's second core.
        f"--cpus={cpus}",
        "--format=json",
    ]
    if total:
        # Exactly `total` calls (the saga counts its orders). Not with --max-duration: ghz
        # 0.120 then ignores the count; run() bounds the time instead.
        args.append(f"--total={total}")
    else:
        # Calls still in flight at the end are left out, not counted as errors.
        args += [f"--duration={seconds:.1f}s", "--duration-stop=ignore"]
    if rps:
        args.append(f"--rps={rps:.0f}")
    if target.metadata:
        args.append(f"--metadata={json.dumps(dict(target.metadata))}")
    if not templates:
        # Template expansion on every call costs client CPU we do not need.
        args += ["--disable-template-functions", "--disable-template-data"]
    if target.tls is None:
        args.append("--insecure")
    else:
        tls = target.tls
        args += [f"--cacert={tls.ca}", f"--cert={tls.cert}", f"--key={tls.key}"]
    args.append(target.address)
    return args


def run(args: Sequence[str], seconds: float) -> Stats:
    """Run ghz; its report as Stats (GhzError if it failed or said nothing)."""
    limit = seconds + 30  # start-up, connecting, the last calls' timeout
    try:
        done = subprocess.run(
            list(args), capture_output=True, text=True, timeout=limit, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise GhzError(f"ghz did not finish within {limit:.0f}s") from exc
    try:
        report = json.loads(done.stdout)
    except ValueError:
        raise GhzError(f"ghz failed ({done.returncode}): {done.stderr.strip()[:500]}") from None
    return parse(report)
