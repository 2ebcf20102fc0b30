"""A whole mesh of real processes for a test module, via the project's own runner."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path

from shopmesh.runner import Mesh
from tests.support import envoymesh


@contextlib.contextmanager
def running_mesh(var_dir: Path, environ: Mapping[str, str] | None = None) -> Iterator[Mesh]:
    """The whole mesh on free ports, stopped afterwards with no process left
    (tests.support.envoymesh.running_mesh, for tests that need only the Mesh)."""
    with envoymesh.running_mesh(var_dir, environ or {}) as running:
        yield running.mesh


def app_addresses(mesh: Mesh) -> dict[str, str]:
    """Each service's first instance, addressed directly (behind its sidecar)."""
    return {service.name: service.instances[0].app_addr for service in mesh.topology.services}


async def shopmesh_cli(mesh: Mesh, *args: str) -> str:
    """Run the `shopmesh` command on this mesh; its output (fails on a non-zero exit)."""
    done = await asyncio.to_thread(
        subprocess.run,
        ["shopmesh", "--var", str(mesh.var.root), *args],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout
