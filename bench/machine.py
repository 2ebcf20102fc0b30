"""The machine and toolchain a run was measured on: absolute numbers mean little without."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil

from bench import ghz
from shopmesh.envoy.render import envoy_binary
from shopmesh.topology import REPO_ROOT


def _output(*command: str) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return (done.stdout or done.stderr).strip()


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def describe() -> dict[str, Any]:
    # "<path>  version: <sha>/1.40.0/Clean/RELEASE/BoringSSL"
    envoy = re.search(r"version: \S+?/([^/\s]+)/", _output(envoy_binary(), "--version"))
    commit = _output("git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD")
    dirty = _output("git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no")
    return {
        "cpu": _cpu(),
        "cores": os.cpu_count(),
        "memory_gb": psutil.virtual_memory().total / 2**30,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "envoy": envoy.group(1) if envoy else "unknown",
        "nats_server": _output(
            str(Path(sys.executable).parent / "nats-server"), "--version"
        ).removeprefix("nats-server: "),
        "ghz": ghz.version(),
        "commit": commit + ("+changes" if dirty else ""),
        "load_average": {"before": os.getloadavg()[0]},
    }
