"""The mesh under test: the whole topology on free ports, plus what the bench adds.

Started through the project's runner (so it is the mesh a user runs), with:
- the gateway's rate limit raised out of the way (the bench measures the path, not the
  limiter);
- tracing on, as the runner sets it up: every Envoy and service exports its spans (every
  request sampled) over OTLP to the mesh's trace sink (``shopmesh.tracesink``);
- the floor Envoys (bench.floor);
- the fake payment provider's per-user limit lifted, so the saga's customers are never
  declined for having bought too much.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench import floor
from shopmesh.envoy import admin
from shopmesh.runner import PROGRAM_BUILDERS, Mesh, PortsBusy
from shopmesh.topology import LOOPBACK, Topology, free_topology, load_topology

ENVIRONMENT = {
    "SHOPMESH_GATEWAY_RPS": "1000000",
    "SHOPMESH_GATEWAY_BURST": "1000000",
    "SHOPMESH_PAYMENT_USER_LIMIT_MINOR": str(10**12),
    "SHOPMESH_SHUTDOWN_GRACE": "1",
}


@dataclass(frozen=True)
class BenchMesh:
    mesh: Mesh

    @property
    def topology(self) -> Topology:
        return self.mesh.topology

    @property
    def var(self) -> Path:
        return self.mesh.var.root

    @property
    def gateway(self) -> str:
        return f"{LOOPBACK}:{self.topology.gateway_port}"

    def pids(self) -> dict[str, tuple[str, int]]:
        """program name -> (kind, pid) of every running program."""
        return {s.name: (s.kind, s.pid) for s in self.mesh.status() if s.pid is not None}


def _wait_all_healthy(mesh: Mesh, timeout: float) -> None:
    """Every Envoy sees every host healthy (the first health checks may predate the apps),
    and the floor Envoys are ready."""
    ports = [mesh.topology.gateway_admin_port, *(i.admin_port for i in mesh.topology.instances)]
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(admin.AdminError):
            healthy = all(h.healthy for port in ports for h in admin.clusters(port))
            if healthy and floor.ready(mesh.topology):
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"Envoys not all ready and healthy after {timeout:.0f}s")
        time.sleep(0.2)


@contextlib.contextmanager
def running(var: Path, timeout: float = 120.0) -> Iterator[BenchMesh]:
    """Start the mesh (free ports, ``var`` as its state directory); always stop it."""
    mesh: Mesh | None = None
    try:
        for attempt in range(3):  # another run may take a port between the check and start
            topology = free_topology(load_topology(environ={}))
            floor.write_configs(var, topology)
            environ = {**os.environ, **ENVIRONMENT}
            mesh = Mesh(
                topology, var, environ=environ, builders=(*PROGRAM_BUILDERS, floor.programs)
            )
            try:
                mesh.start()
                break
            except PortsBusy:
                mesh = None
                if attempt == 2:
                    raise
        assert mesh is not None
        mesh.wait_ready(timeout=timeout)
        _wait_all_healthy(mesh, timeout=30.0)
        yield BenchMesh(mesh)
    finally:
        if mesh is not None:
            mesh.stop(timeout=30.0)
