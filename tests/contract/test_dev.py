"""The front door: ./dev's checks and the recipes that read the contracts."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.contract


def dev(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ROOT / "dev"), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, **(env or {})},
    )


def test_too_old_a_python_gets_a_one_line_error(tmp_path: Path) -> None:
    old = tmp_path / "python3.9"
    old.write_text('#!/bin/sh\n[ "$1" = "-V" ] && echo "Python 3.9.18" && exit 0\nexit 1\n')
    old.chmod(0o755)
    done = dev("--version", env={"SHOPMESH_PYTHON": str(old)})
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"shopmesh needs Python 3.11 or newer; '{old}' is Python 3.9.18."
    )


def test_an_unchanged_lock_installs_nothing() -> None:
    dev("--version")  # whatever state .venv was in, it is now current
    done = dev("--version")
    assert done.returncode == 0, done.stderr
    assert "installing" not in done.stderr
    assert done.stdout.startswith("just ")


def test_describe_shows_the_rpcs_with_their_comments() -> None:
    done = dev("describe", "shop.order.v1.OrderService")
    assert done.returncode == 0, done.stderr
    assert "rpc PlaceOrder" in done.stdout
    assert "// Prices the lines from the inventory catalogue" in done.stdout
