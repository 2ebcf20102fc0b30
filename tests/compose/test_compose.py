"""docker-compose.yml and envoy/compose/: up to date, valid, and the topology's mesh.

No container runs here (no Docker engine): these checks stand in for `docker compose up`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from shopmesh import compose
from shopmesh.cli import main
from shopmesh.envoy import render
from shopmesh.envoy.layout import Layout
from shopmesh.topology import REPO_ROOT, Topology, load_topology

pytestmark = pytest.mark.contract

Json = dict[str, Any]


@pytest.fixture(scope="module")
def topology() -> Topology:
    return load_topology(environ={})


@pytest.fixture(scope="module")
def services() -> Json:
    data = yaml.safe_load((REPO_ROOT / compose.COMPOSE_FILE).read_text())
    return dict(data["services"])


def test_committed_files_are_what_the_topology_generates(topology: Topology) -> None:
    stale = compose.differences(REPO_ROOT, topology)
    assert not stale, f"out of date with topology.yaml: {stale}; run ./dev compose and commit"


def test_compose_file_passes_the_compose_specification() -> None:
    # The schema ships inside check-jsonschema: no network needed.
    tool = shutil.which("check-jsonschema", path=str(Path(sys.executable).parent))
    assert tool is not None
    proc = subprocess.run(
        [tool, "--builtin-schema", "vendor.compose-spec", str(compose.COMPOSE_FILE)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_instance_runs_with_its_sidecar_in_its_network_namespace(
    topology: Topology, services: Json
) -> None:
    instances = [i.name for i in topology.instances]
    assert [n for n in instances if n.startswith("payment-")] == ["payment-1", "payment-2"]
    expected = {"init", "nats", "jaeger", "reflector", "gateway"}
    expected |= {name for i in instances for name in (i, f"{i}-sidecar")}
    assert set(services) == expected
    for inst in topology.instances:
        app, sidecar = services[inst.name], services[f"{inst.name}-sidecar"]
        assert app["command"] == ["python", "-m", f"services.{inst.service}"]
        assert sidecar["network_mode"] == f"service:{inst.name}"
        assert f"/var/shopmesh/envoy/{inst.name}-sidecar.yaml" in sidecar["command"]
        assert sidecar["depends_on"]["init"] == {"condition": "service_completed_successfully"}
        # Both payment instances share payment's database, as locally.
        assert f"{inst.service}-data:/var/shopmesh/data" in app["volumes"]


def test_services_call_their_dependencies_through_their_sidecar(
    topology: Topology, services: Json
) -> None:
    for inst in topology.instances:
        env = services[inst.name]["environment"]
        assert env["SHOPMESH_SERVICE"] == inst.service
        assert env["SHOPMESH_INSTANCE"] == inst.name
        assert env["SHOPMESH_GRPC_ADDR"] == f"0.0.0.0:{inst.app_port}"
        assert env["SHOPMESH_NATS_URL"] == f"nats://nats:{topology.nats_port}"
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger:4317"
        upstreams = {k: v for k, v in env.items() if k.startswith("SHOPMESH_UPSTREAM_")}
        assert upstreams == {
            f"SHOPMESH_UPSTREAM_{topology.service(dep).env_name}": f"127.0.0.1:{port}"
            for dep, port in inst.egress_ports.items()
        }


def test_published_ports_are_the_gateway_and_the_jaeger_ui(
    topology: Topology, services: Json
) -> None:
    assert topology.gateway_port == 8080
    published = {name: s["ports"] for name, s in services.items() if "ports" in s}
    assert published == {
        "gateway": ["127.0.0.1:8080:8080"],
        "jaeger": ["127.0.0.1:16686:16686"],
    }


def test_gateway_starts_once_the_jwks_and_every_instance_are_there(
    topology: Topology, services: Json
) -> None:
    gateway = services["gateway"]
    healthy = {"condition": "service_healthy"}
    for inst in topology.instances:
        assert gateway["depends_on"][inst.name] == healthy  # user-1: the JWKS is written
        assert gateway["depends_on"][f"{inst.name}-sidecar"] == healthy
    assert gateway["depends_on"]["reflector"] == healthy
    assert "keys:/var/shopmesh/keys:ro" in gateway["volumes"]
    assert "keys:/var/shopmesh/keys" in services["user-1"]["volumes"]
    # Every long-running container reports its health.
    for name, service in services.items():
        if name not in ("init", "jaeger"):
            assert service["healthcheck"]["test"][:4] == ["CMD", "python", "-m", "shopmesh.probes"]


def test_reflector_knows_every_instance(topology: Topology, services: Json) -> None:
    command = services["reflector"]["command"]
    for svc in topology.services:
        addresses = ",".join(f"{i.name}:{i.app_port}" for i in svc.instances)
        assert f"--service={svc.name}={addresses}" in command


def _leaves(a: Any, b: Any, path: str = "") -> Iterator[tuple[str, Any, Any]]:
    """Every place where ``a`` and ``b`` differ, as (path, a's value, b's value)."""
    if isinstance(a, dict) and isinstance(b, dict) and a.keys() == b.keys():
        for key in a:
            yield from _leaves(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for n, (x, y) in enumerate(zip(a, b, strict=True)):
            yield from _leaves(x, y, f"{path}[{n}]")
    elif a != b:
        yield path, a, b


def test_compose_envoy_configs_differ_from_local_ones_only_in_hosts(
    topology: Topology,
) -> None:
    """Same paths, same trace collector: what is left is who listens and who is called."""
    plan = compose.mesh_plan(topology)
    local = render.configs(plan, Layout(compose.VAR), compose.settings())
    ours = render.configs(plan, compose.layout(plan), compose.settings())
    assert local.keys() == ours.keys()
    for name in local:
        for path, was, now in _leaves(local[name], ours[name]):
            if path.endswith(".socket_address.address"):
                assert was == "127.0.0.1"
                assert now in ("0.0.0.0", "reflector", *(i.name for i in plan.instances))
            else:
                # A host name needs DNS (and a restarted container gets a new address).
                assert path.endswith(".type"), path
                assert (was, now) == ("STATIC", "STRICT_DNS")


def test_sidecars_listen_on_every_interface_but_egress_stays_on_loopback() -> None:
    config = yaml.safe_load((REPO_ROOT / compose.ENVOY_DIR / "order-1-sidecar.yaml").read_text())
    binds = {
        listener["name"]: listener["address"]["socket_address"]["address"]
        for listener in config["static_resources"]["listeners"]
    }
    # Order's one sync dependency is inventory: it trusts the gateway's caller, not user.
    assert binds == {"ingress": "0.0.0.0", "egress_inventory": "127.0.0.1"}
    assert config["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"


@pytest.fixture(scope="module")
def container_var(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the containers see under /var/shopmesh: the init step's certificates, a JWKS,
    and envoy/compose/ with /var/shopmesh/ pointed here."""
    var = tmp_path_factory.mktemp("var")
    result = CliRunner().invoke(main, ["--var", str(var), "compose", "init"])
    assert result.exit_code == 0, result.output
    public = ec.generate_private_key(ec.SECP256R1()).public_key()
    jwk = {**ECAlgorithm.to_jwk(public, as_dict=True), "kid": "k", "alg": "ES256"}
    (var / "keys").mkdir()
    (var / "keys" / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
    (var / "envoy").mkdir()
    (var / "log").mkdir()  # the Dockerfile makes it: Envoy opens its logs at start
    for path in (REPO_ROOT / compose.ENVOY_DIR).iterdir():
        data = path.read_bytes()
        if path.suffix == ".yaml":
            data = data.replace(f"{compose.VAR}/".encode(), f"{var}/".encode())
        (var / "envoy" / path.name).write_bytes(data)
    return var


def test_init_issues_a_certificate_for_the_gateway_and_every_instance(
    topology: Topology, container_var: Path
) -> None:
    names = {p.stem for p in (container_var / "pki").glob("*.crt")}
    assert names == {"ca", "gateway", *(i.name for i in topology.instances)}


def test_every_compose_envoy_config_passes_envoy_validate(container_var: Path) -> None:
    configs = sorted((container_var / "envoy").glob("*.yaml"))
    assert len(configs) == 7  # the gateway and six sidecars
    envoy = render.envoy_binary()
    for config in configs:
        proc = subprocess.run(
            [envoy, "--mode", "validate", "-c", str(config), "--disable-hot-restart"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 0, f"{config.name}:\n{proc.stdout}\n{proc.stderr}"
