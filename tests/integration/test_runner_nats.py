"""The process runner with real processes: supervisord, nats-server and stand-in services.

Every mesh here runs on a free base port in a tmp var dir, so it can run beside a
developer's mesh; the ``meshes`` fixture stops each one and checks that no process of the
run survives, whatever the test did.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import textwrap
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from shopmesh.runner import (
    Mesh,
    MeshAlreadyRunning,
    MeshNotReady,
    PortsBusy,
    is_alive,
)
from shopmesh.topology import Topology, free_topology, load_topology, topology_from_dict
from tests.support.envoymesh import run_processes

pytestmark = pytest.mark.integration

MeshFactory = Callable[..., Mesh]

# A stand-in service that follows the process contract: gRPC health on SHOPMESH_GRPC_ADDR,
# and it records its environment so the test can check what the runner passed.
FAKE_SERVICE = textwrap.dedent(
    """
    import json, os, signal, sys, threading
    from concurrent import futures

    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    env = {k: v for k, v in os.environ.items() if k.startswith("SHOPMESH_")}
    out = os.path.join(env["SHOPMESH_VAR"], "env-" + env["SHOPMESH_INSTANCE"] + ".json")
    with open(out, "w") as f:
        json.dump(env, f)
    server = grpc.server(futures.ThreadPoolExecutor(4))
    servicer = health.HealthServicer()
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    server.add_insecure_port(env["SHOPMESH_GRPC_ADDR"])
    server.start()
    print("serving on", env["SHOPMESH_GRPC_ADDR"], flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    done.wait()
    server.stop(1).wait()
    print("stopped cleanly", flush=True)
    """
)

CRASHING_SERVICE = 'import sys\nprint("boom: no database", flush=True)\nsys.exit(3)\n'


@pytest.fixture
def meshes(tmp_path: Path) -> Iterator[MeshFactory]:
    """Build meshes; on teardown stop them all and fail if any process of theirs is left."""
    made: list[Mesh] = []

    def make(topology: Topology, **kwargs: Any) -> Mesh:
        var = tmp_path / f"var{len(made)}"
        mesh = Mesh(topology, var, **kwargs)
        made.append(mesh)
        return mesh

    yield make

    leftovers: list[psutil.Process] = []
    for mesh in made:
        mesh.stop(timeout=20)
        leftovers += run_processes(mesh.var.root)
    for proc in leftovers:  # kill before failing: never leave a process behind
        proc.kill()
    assert not leftovers, f"processes left running: {leftovers}"


@pytest.fixture
def no_services() -> Topology:
    return free_topology(load_topology(environ={}).only())


@pytest.fixture
def fake_repo(tmp_path: Path) -> Path:
    """A repo root whose services/ holds stand-in services (echo, caller, crash)."""
    root = tmp_path / "repo"
    for name, source in (("echo", FAKE_SERVICE), ("caller", FAKE_SERVICE)):
        (root / "services" / name).mkdir(parents=True)
        (root / "services" / name / "__init__.py").write_text("")
        (root / "services" / name / "__main__.py").write_text(source)
    (root / "services" / "crash").mkdir()
    (root / "services" / "crash" / "__init__.py").write_text("")
    (root / "services" / "crash" / "__main__.py").write_text(CRASHING_SERVICE)
    (root / "services" / "__init__.py").write_text("")
    return root


def _get_json(port: int, path: str) -> dict[str, Any]:
    # No proxies: only loopback traffic, whatever the environment says.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


def test_nats_with_jetstream_starts_and_stops_cleanly(
    meshes: MeshFactory, no_services: Topology
) -> None:
    mesh = meshes(no_services)
    assert [p.name for p in mesh.programs] == ["nats"]
    mesh.start()
    mesh.wait_ready(timeout=30)

    # The client port speaks NATS and announces JetStream.
    with socket.create_connection(("127.0.0.1", no_services.nats_port), timeout=5) as conn:
        info = conn.makefile("rb").readline()
    assert info.startswith(b"INFO ")
    assert json.loads(info[5:])["jetstream"] is True

    jsz = _get_json(no_services.nats_monitor_port, "/jsz")
    assert jsz["config"]["store_dir"].startswith(str(mesh.var.nats))
    assert not jsz.get("disabled", False)

    (nats,) = [s for s in mesh.status() if s.name == "nats"]
    assert nats.state == "RUNNING"
    assert nats.pid is not None
    assert nats.uptime is not None
    assert nats.ports == {"client": no_services.nats_port, "monitor": no_services.nats_monitor_port}
    # Loopback only.
    listening = {c.laddr.ip for c in psutil.Process(nats.pid).net_connections("tcp")}
    assert listening == {"127.0.0.1"}

    run = mesh._processes()
    names = {p.name() for p in run}
    assert {"supervisord", "nats-server"} <= names
    mesh.stop()
    alive = [p for p in run if is_alive(p)]
    assert not alive, f"still running after stop(): {alive}"
    assert not mesh.is_running()
    assert "Server Exiting" in mesh.program("nats").log.read_text()  # TERM, not KILL


def test_missing_services_are_reported_and_nats_starts(meshes: MeshFactory, tmp_path: Path) -> None:
    topology = free_topology(topology_from_dict({"services": {"ghost": {"instances": 2}}}))
    mesh = meshes(topology, repo_root=tmp_path / "empty-repo")
    assert [u.name for u in mesh.unavailable] == ["ghost-1", "ghost-2"]
    assert "services/ghost/__main__.py does not exist yet" in mesh.unavailable[0].reason
    mesh.start()
    mesh.wait_ready(timeout=30)
    states = {s.name: s.state for s in mesh.status()}
    assert states == {"nats": "RUNNING", "ghost-1": "UNAVAILABLE", "ghost-2": "UNAVAILABLE"}


def test_services_get_the_contract_environment(
    meshes: MeshFactory, fake_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # % and quotes must survive supervisord's config syntax (e.g. a URL-encoded password).
    db_url = 'postgresql+psycopg://shop:p%40ss"w@127.0.0.1/caller'
    monkeypatch.setenv("SHOPMESH_CALLER_DB", db_url)
    monkeypatch.setenv("SHOPMESH_UPSTREAM_GHOST", "127.0.0.1:1")  # stale: must not leak
    topology = free_topology(
        topology_from_dict(
            {"services": {"echo": {"instances": 2}, "caller": {"depends_on": ["echo"]}}}
        )
    )
    mesh = meshes(topology, repo_root=fake_repo)
    mesh.start()
    mesh.wait_ready(timeout=30)

    states = {s.name: s.state for s in mesh.status()}
    assert states == {n: "RUNNING" for n in ("nats", "tracesink", "echo-1", "echo-2", "caller-1")}
    assert all(v is None for v in mesh.probe().values())

    env = json.loads((mesh.var.root / "env-caller-1.json").read_text())
    caller = topology.instance("caller-1")
    assert env == {
        "SHOPMESH_SERVICE": "caller",
        "SHOPMESH_INSTANCE": "caller-1",
        "SHOPMESH_GRPC_ADDR": f"127.0.0.1:{caller.app_port}",
        "SHOPMESH_VAR": str(mesh.var.root),
        "SHOPMESH_NATS_URL": f"nats://127.0.0.1:{topology.nats_port}",
        "SHOPMESH_UPSTREAM_ECHO": topology.instance("echo-1").app_addr,
        "SHOPMESH_CALLER_DB": db_url,
    }
    echo2 = json.loads((mesh.var.root / "env-echo-2.json").read_text())
    assert echo2["SHOPMESH_INSTANCE"] == "echo-2"
    assert echo2["SHOPMESH_GRPC_ADDR"] == topology.instance("echo-2").app_addr

    # A crash after start is reported, not hidden by a restart.
    (echo2_status,) = [s for s in mesh.status() if s.name == "echo-2"]
    assert echo2_status.pid is not None
    os.kill(echo2_status.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while True:
        (after,) = [s for s in mesh.status() if s.name == "echo-2"]
        if after.crashed or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert after.state == "EXITED"
    assert after.crashed

    mesh.stop()
    assert "stopped cleanly" in mesh.program("echo-1").log.read_text()  # got TERM first


def test_instant_crash_fails_wait_ready_with_the_log(meshes: MeshFactory, fake_repo: Path) -> None:
    topology = free_topology(topology_from_dict({"services": {"crash": {}}}))
    mesh = meshes(topology, repo_root=fake_repo)
    mesh.start()
    with pytest.raises(MeshNotReady) as failure:
        mesh.wait_ready(timeout=30)
    message = str(failure.value)
    assert "crash-1 [FATAL]" in message
    assert "boom: no database" in message  # the tail of its log


def test_busy_port_and_second_start_are_refused(meshes: MeshFactory, no_services: Topology) -> None:
    with (
        socket.create_server(("127.0.0.1", no_services.nats_monitor_port)),
        pytest.raises(PortsBusy, match=str(no_services.nats_monitor_port)),
    ):
        meshes(no_services).start()

    mesh = meshes(no_services)
    mesh.start()
    with pytest.raises(MeshAlreadyRunning):
        Mesh(no_services, mesh.var.root).start()
    # attach() finds the running mesh from its var dir alone, with the same ports.
    attached = Mesh.attach(mesh.var.root)
    assert attached.topology == no_services
    assert [s.name for s in attached.status()] == ["nats"]


def test_cli_start_status_logs_stop(tmp_path: Path, no_services: Topology) -> None:
    from click.testing import CliRunner

    from shopmesh.cli import main

    file = tmp_path / "topology.yaml"
    file.write_text(
        f"base_port: {no_services.base_port}\ngateway: {{port: null}}\nservices: {{}}\n"
    )
    var = tmp_path / "var"
    cli = CliRunner()
    args = ["--var", str(var), "--topology", str(file)]
    env = {"SHOPMESH_BASE_PORT": "", "SHOPMESH_GATEWAY_PORT": ""}
    try:
        result = cli.invoke(main, [*args, "status"], env=env)
        assert result.exit_code == 3, result.output

        result = cli.invoke(main, [*args, "start", "--timeout", "30"], env=env)
        assert result.exit_code == 0, result.output
        assert f"127.0.0.1:{no_services.nats_port}" in result.output
        assert "SERVING" in result.output

        result = cli.invoke(main, [*args, "status"], env=env)
        assert result.exit_code == 0, result.output
        assert "RUNNING" in result.output

        result = cli.invoke(main, [*args, "logs", "nats", "-n", "200"], env=env)
        assert result.exit_code == 0, result.output
        assert "Server is ready" in result.output

        result = cli.invoke(main, [*args, "stop"], env=env)
        assert result.exit_code == 0, result.output
        assert "mesh stopped" in result.output
    finally:
        Mesh(no_services, var).stop(timeout=20)
        left = run_processes(var.resolve())
        for proc in left:
            proc.kill()
    assert not left
