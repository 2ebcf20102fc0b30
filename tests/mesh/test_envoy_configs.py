"""The generated Envoy configs: Envoy itself accepts every one, and they follow the topology."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from shopmesh.envoy import render
from shopmesh.envoy.layout import Layout, MeshPlan
from shopmesh.envoy.settings import Settings
from shopmesh.topology import Topology, load_topology, topology_from_dict

pytestmark = pytest.mark.integration


def _write_jwks(layout: Layout) -> None:
    # The user service writes the real one; any valid JWKS will do for validation.
    public = ec.generate_private_key(ec.SECP256R1()).public_key()
    layout.jwks.parent.mkdir(parents=True, exist_ok=True)
    jwk = {**ECAlgorithm.to_jwk(public, as_dict=True), "kid": "k", "alg": "ES256"}
    layout.jwks.write_text(json.dumps({"keys": [jwk]}))


def _render(topology: Topology, var: Path) -> dict[str, dict[str, Any]]:
    layout = Layout(var)
    _write_jwks(layout)
    paths = render.prepare(MeshPlan.of(topology), layout, Settings())
    return {p.stem: yaml.safe_load(p.read_text()) for p in paths}


def _validate(path: Path) -> None:
    proc = subprocess.run(
        [render.envoy_binary(), "--mode", "validate", "-c", str(path), "--disable-hot-restart"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, f"{path.name}:\n{proc.stdout}\n{proc.stderr}"


def _cluster(config: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [c for c in config["static_resources"]["clusters"] if c["name"] == name]
    return dict(found)


def _gateway_hcm(config: dict[str, Any]) -> dict[str, Any]:
    listener = config["static_resources"]["listeners"][0]
    return dict(listener["filter_chains"][0]["filters"][0]["typed_config"])


def _endpoints(cluster: dict[str, Any]) -> list[tuple[str, int]]:
    return [
        (e["endpoint"]["hostname"], e["endpoint"]["address"]["socket_address"]["port_value"])
        for group in cluster["load_assignment"]["endpoints"]
        for e in group["lb_endpoints"]
    ]


def test_every_generated_config_passes_envoy_validate(tmp_path: Path) -> None:
    topology = load_topology(environ={})
    configs = _render(topology, tmp_path)
    assert set(configs) == {"gateway"} | {f"{i.name}-sidecar" for i in topology.instances}
    for name in configs:
        _validate(tmp_path / "envoy" / f"{name}.yaml")


def test_three_payment_instances_give_three_sidecars_and_three_endpoints(
    tmp_path: Path,
) -> None:
    topology = load_topology(environ={}).with_instances("payment", 3)
    configs = _render(topology, tmp_path)

    sidecars = sorted(n for n in configs if n.startswith("payment-"))
    assert sidecars == ["payment-1-sidecar", "payment-2-sidecar", "payment-3-sidecar"]
    payment = _cluster(configs["gateway"], "payment")
    assert _endpoints(payment) == [
        (i.name, i.ingress_port) for i in topology.service("payment").instances
    ]
    for name in ("gateway", *sidecars):
        _validate(tmp_path / "envoy" / f"{name}.yaml")


def test_resilience_settings_are_where_envoy_looks_for_them(tmp_path: Path) -> None:
    configs = _render(load_topology(environ={}), tmp_path)
    gateway = configs["gateway"]
    payment = _cluster(gateway, "payment")
    outlier = payment["outlier_detection"]
    # The traps: both default to values that never eject a host of a two-host cluster.
    assert outlier["enforcing_consecutive_gateway_failure"] == 100
    assert outlier["max_ejection_percent"] >= 50
    # Health checks skip the fault filter: a passing one must not end an ejection.
    assert outlier["successful_active_health_check_uneject_host"] is False
    assert payment["common_lb_config"] == {"update_merge_window": "0s"}
    check = payment["health_checks"][0]
    assert check["grpc_health_check"] == {"service_name": "shop.payment.v1.PaymentService"}
    assert check["no_traffic_interval"] == "2s"
    thresholds = payment["circuit_breakers"]["thresholds"][0]
    assert {"max_connections", "max_pending_requests", "max_requests", "retry_budget"} <= set(
        thresholds
    )

    hcm = _gateway_hcm(gateway)
    routes = {r["name"]: r for r in hcm["route_config"]["virtual_hosts"][0]["routes"]}
    reads, writes = routes["payment.ListPayments"]["route"], routes["order.PlaceOrder"]["route"]
    assert "resource-exhausted" not in reads["retry_policy"]["retry_on"]
    assert "unavailable" in reads["retry_policy"]["retry_on"]
    assert "retry_policy" not in writes
    assert reads["max_stream_duration"]["grpc_timeout_header_max"] == "30s"
    filters = [f["name"].rsplit(".", 1)[-1] for f in hcm["http_filters"]]
    # Cheapest rejection first; JWT rules see gRPC paths because the transcoder ran before.
    assert filters == [
        "local_ratelimit",
        "grpc_json_transcoder",
        "jwt_authn",
        "grpc_stats",
        "router",
    ]


def _admitted(sidecar: dict[str, Any]) -> list[str]:
    """The workloads whose certificates a sidecar's ingress accepts."""
    listeners = sidecar["static_resources"]["listeners"]
    (ingress,) = [listener for listener in listeners if listener["name"] == "ingress"]
    tls = ingress["filter_chains"][0]["transport_socket"]["typed_config"]
    sans = tls["common_tls_context"]["validation_context"]["match_typed_subject_alt_names"]
    return [san["matcher"]["exact"].rsplit("/", 1)[-1] for san in sans]


def test_sidecars_follow_the_sync_dependencies(tmp_path: Path) -> None:
    configs = _render(load_topology(environ={}), tmp_path)
    order = configs["order-1-sidecar"]["static_resources"]
    # Order trusts the caller the gateway verified and calls only inventory, not user.
    listeners = [listener["name"] for listener in order["listeners"]]
    assert listeners == ["ingress", "egress_inventory"]
    assert "user" not in {c["name"] for c in order["clusters"]}
    assert _admitted(configs["user-1-sidecar"]) == ["gateway", "notification"]
    assert _admitted(configs["inventory-1-sidecar"]) == ["gateway", "order"]


def test_only_instances_with_a_contract_get_a_sidecar(tmp_path: Path) -> None:
    topology = topology_from_dict(
        {"services": {"inventory": {}, "echo": {"instances": 2}}}, environ={}
    )
    plan = MeshPlan.of(topology)
    assert [i.name for i in plan.instances] == ["inventory-1"]
    configs = _render(topology, tmp_path)
    assert set(configs) == {"gateway", "inventory-1-sidecar"}
    # No user service: the gateway gets a placeholder JWKS that no token matches.
    filters = _gateway_hcm(configs["gateway"])["http_filters"]
    jwt = next(f for f in filters if f["name"].endswith("jwt_authn"))
    jwks = jwt["typed_config"]["providers"]["shopmesh"]["local_jwks"]["filename"]
    assert Path(jwks).name == render.PLACEHOLDER_JWKS
    _validate(tmp_path / "envoy" / "gateway.yaml")


@pytest.mark.parametrize(
    ("environ", "percent"),
    [
        ({}, 100.0),
        (
            {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"},
            10.0,
        ),
        ({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.25"}, 25.0),
        ({"OTEL_TRACES_SAMPLER": "parentbased_always_off"}, 0.0),
        ({"OTEL_TRACES_SAMPLER": "always_on", "OTEL_TRACES_SAMPLER_ARG": "0.1"}, 100.0),
    ],
)
def test_envoys_sample_as_the_standard_otel_variables_say(
    tmp_path: Path, environ: dict[str, str], percent: float
) -> None:
    settings = Settings.from_env(environ)
    assert settings.trace_sampling_percent == pytest.approx(percent)
    layout = Layout(tmp_path)
    _write_jwks(layout)
    paths = render.prepare(MeshPlan.of(load_topology(environ={})), layout, settings)
    traced = 0
    for path in paths:
        config = yaml.safe_load(path.read_text())
        for listener in config["static_resources"]["listeners"]:
            for chain in listener["filter_chains"]:
                hcm = chain["filters"][0]["typed_config"]
                if "tracing" in hcm:
                    assert hcm["tracing"]["random_sampling"] == {"value": pytest.approx(percent)}
                    traced += 1
    assert traced >= len(paths)  # the gateway and every sidecar's listeners trace


@pytest.mark.parametrize("ratio", ["1.5", "-0.1", "a tenth"])
def test_a_sampling_ratio_out_of_range_is_refused(ratio: str) -> None:
    with pytest.raises(ValueError, match="OTEL_TRACES_SAMPLER_ARG"):
        Settings.from_env(
            {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": ratio}
        )
