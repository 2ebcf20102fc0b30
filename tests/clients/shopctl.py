"""Building and running the Go and TypeScript shopctl from tests.

A missing Go or Node skips only the tests of that client, saying so; with CI=true it is
a failure instead, so CI cannot go green without running them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LANGUAGES = ("go", "ts")


def toolchain(name: str, why: str) -> str:
    """The path of a toolchain binary; skip (fail in CI) when it is missing."""
    found = shutil.which(name)
    if found is None:
        message = f"{name} is not installed: {why}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message} (CI=true: a missing toolchain is a failure)")
        pytest.skip(message)
    return found


def run(
    command: list[str], cwd: Path, env: Mapping[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run a build or check step; a failure fails the test with its output."""
    proc = subprocess.run(
        command,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(command)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return proc


def npm() -> str:
    """npm, with the pinned packages installed (./dev runs `just tools` before tests)."""
    toolchain("node", "the TypeScript client's tests need Node 20+")
    npm = toolchain("npm", "the TypeScript client's tests need npm")
    if not (REPO / "node_modules" / ".bin" / "esbuild").exists():
        run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], REPO)
    return npm


@dataclass(frozen=True)
class Shopctl:
    """One built shopctl; the same command line works for every language."""

    language: str
    argv: tuple[str, ...]

    def __call__(
        self, gateway: str, *args: str, token: str = "", timeout: float = 60
    ) -> subprocess.CompletedProcess[bytes]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SHOPCTL_")}
        command = [*self.argv, "--addr", gateway, "--timeout", "10s"]
        if token:
            command += ["--token", token]
        return subprocess.run(
            [*command, *args], capture_output=True, env=env, timeout=timeout, check=False
        )
