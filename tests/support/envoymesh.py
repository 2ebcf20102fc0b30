"""One whole mesh (services, sidecars, gateway) per test module, and what tests ask of it.

The mesh runs on a free base port with the gateway relocated into its block and a tmp
var dir, so it can run beside a developer's mesh. Stopping it checks that no process of
the run is left, whatever the tests did.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import grpc
import psutil
from shop.user.v1 import user_pb2, user_pb2_grpc

from shopmesh.envoy import admin
from shopmesh.envoy.layout import GATEWAY, sidecar_name
from shopmesh.runner import Mesh, PortsBusy, is_alive
from shopmesh.topology import free_topology, load_topology

PASSWORD = "correct horse battery"
NO_PROXY = [("grpc.enable_http_proxy", 0)]


def run_processes(var: Path) -> list[psutil.Process]:
    """Every live process whose command line or environment names this run's var dir."""
    found = []
    for proc in psutil.process_iter(["cmdline", "environ"]):
        try:
            cmdline = " ".join(proc.info["cmdline"] or [])
            env = proc.info["environ"] or {}
        except psutil.Error:
            continue
        if (str(var) in cmdline or env.get("SHOPMESH_VAR") == str(var)) and is_alive(proc):
            found.append(proc)
    return found


def wait_for(what: str, check: Callable[[], bool], timeout: float, poll: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f}s: {what}")
        time.sleep(poll)


@dataclass(frozen=True)
class Customer:
    user_id: str
    email: str
    token: str

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),)


@dataclass
class RunningMesh:
    mesh: Mesh

    @property
    def var(self) -> Path:
        return self.mesh.var.root

    @property
    def gateway(self) -> str:
        return f"127.0.0.1:{self.mesh.topology.gateway_port}"

    @property
    def gateway_admin(self) -> int:
        return self.mesh.topology.gateway_admin_port

    def sidecar_admin(self, instance: str) -> int:
        return self.mesh.topology.instance(instance).admin_port

    def pid(self, program: str) -> int:
        (status,) = [s for s in self.mesh.status() if s.name == program]
        assert status.pid is not None, f"{program} is {status.state}"
        return status.pid

    @cached_property
    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(self.gateway, options=NO_PROXY)

    def customer(self) -> Customer:
        """A new user, registered and logged in through the gateway."""
        users = user_pb2_grpc.UserServiceStub(self.channel)
        email = f"c-{uuid.uuid4().hex[:12]}@example.com"
        users.Register(
            user_pb2.RegisterRequest(email=email, password=PASSWORD, name="Test"), timeout=10
        )
        login = users.Login(user_pb2.LoginRequest(email=email, password=PASSWORD), timeout=10)
        return Customer(login.user.user_id, email, login.access_token)

    def hosts(self, envoy_admin: int, cluster: str) -> dict[str, admin.HostStatus]:
        return {h.hostname: h for h in admin.clusters(envoy_admin) if h.cluster == cluster}

    def wait_all_healthy(self, timeout: float = 30.0) -> None:
        """Every host of every Envoy healthy (first health checks may predate the apps)."""
        ports = [self.gateway_admin] + [i.admin_port for i in self.mesh.topology.instances]

        def healthy() -> bool:
            return all(h.healthy for port in ports for h in admin.clusters(port))

        wait_for("every Envoy sees every host healthy", healthy, timeout, poll=0.2)

    def stats(self, pattern: str, envoy_admin: int | None = None) -> dict[str, int]:
        return admin.stats(envoy_admin or self.gateway_admin, pattern)

    def access_log(self, envoy: str) -> list[dict[str, Any]]:
        path = self.var / "log" / f"{envoy}.access.log"
        with contextlib.suppress(FileNotFoundError):
            return [json.loads(line) for line in path.read_text().splitlines() if line]
        return []

    def sidecar_log(self, instance: str) -> list[dict[str, Any]]:
        return self.access_log(sidecar_name(self.mesh.topology.instance(instance)))

    def gateway_log(self) -> list[dict[str, Any]]:
        return self.access_log(GATEWAY)

    def supervisorctl(self, *args: str) -> str:
        proc = subprocess.run(
            ["supervisorctl", "-c", str(self.mesh.var.conf), *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        return proc.stdout + proc.stderr


@contextlib.contextmanager
def running_mesh(var: Path, environ: Mapping[str, str]) -> Iterator[RunningMesh]:
    """The whole mesh from topology.yaml on free ports, stopped and checked afterwards."""
    # A short shutdown grace: tests stop the mesh with nothing in flight.
    env = {**os.environ, "SHOPMESH_SHUTDOWN_GRACE": "1", **environ}
    mesh: Mesh | None = None
    try:
        for attempt in range(3):  # another run may grab a port between the check and start
            topology = free_topology(load_topology(environ={}))
            mesh = Mesh(topology, var, environ=env)
            try:
                mesh.start()
                break
            except PortsBusy:
                if attempt == 2:
                    raise
        assert mesh is not None
        mesh.wait_ready(timeout=90)
        running = RunningMesh(mesh)
        running.wait_all_healthy()
        yield running
    finally:
        if mesh is not None:
            mesh.stop(timeout=20)
        leftovers = run_processes(var.resolve())
        for proc in leftovers:  # kill before failing: never leave a process behind
            with contextlib.suppress(psutil.Error):
                proc.kill()
        assert not leftovers, f"processes left running: {leftovers}"
