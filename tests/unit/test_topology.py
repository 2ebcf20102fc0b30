"""The topology file and the port scheme derived from it."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from shopmesh.topology import (
    DEFAULT_TOPOLOGY_FILE,
    Topology,
    TopologyError,
    find_free_base_port,
    load_topology,
    port_is_free,
    topology_from_dict,
)

pytestmark = pytest.mark.unit


@pytest.fixture
def topology() -> Topology:
    # The environment must not leak into these tests (a developer may export overrides).
    return load_topology(DEFAULT_TOPOLOGY_FILE, environ={})


@pytest.fixture
def listener() -> Iterator[int]:
    """A port we hold ourselves for the duration of a test."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_file_declares_the_shop(topology: Topology) -> None:
    assert topology.service_names == ("user", "order", "inventory", "payment", "notification")
    assert topology.base_port == 7000
    assert topology.gateway_port == 8080
    # Order trusts the caller the gateway verified: it does not call user (architecture.md).
    assert topology.service("order").depends_on == ("inventory",)
    assert topology.service("notification").depends_on == ("user",)
    assert topology.service("user").depends_on == ()


def test_payment_has_two_named_instances(topology: Topology) -> None:
    assert [i.name for i in topology.service("payment").instances] == ["payment-1", "payment-2"]
    assert [i.name for i in topology.instances] == [
        "user-1",
        "order-1",
        "inventory-1",
        "payment-1",
        "payment-2",
        "notification-1",
    ]


def test_ports_are_unique(topology: Topology) -> None:
    ports = topology.ports()
    assert len(set(ports.values())) == len(ports)
    # Every kind of port is there: app, ingress, admin, egress per dependency, mesh-wide.
    assert {"nats", "nats.monitor", "otlp", "gateway", "gateway.admin"} <= ports.keys()
    assert ports["order-1.egress.inventory"] != ports["notification-1.egress.user"]
    assert "order-1.egress.user" not in ports
    assert "user-1.egress.order" not in ports


def test_ports_are_deterministic(topology: Topology) -> None:
    again = load_topology(DEFAULT_TOPOLOGY_FILE, environ={})
    assert again.ports() == topology.ports()
    # The documented scheme, spelled out once so that a change is deliberate.
    assert topology.nats_port == 7000
    assert topology.nats_monitor_port == 7001
    assert topology.otlp_port == 7002
    assert topology.gateway_admin_port == 7003
    order = topology.instance("order-1")
    assert (order.app_port, order.ingress_port, order.admin_port) == (7200, 7201, 7202)
    assert order.egress_port("inventory") == 7203
    assert topology.instance("notification-1").egress_port("user") == 7503
    assert topology.instance("payment-2").app_port == 7410


def test_ports_follow_the_base(topology: Topology) -> None:
    moved = topology.with_ports(12000)
    delta = {k: moved.ports()[k] - v for k, v in topology.ports().items() if k != "gateway"}
    assert set(delta.values()) == {5000}
    assert moved.gateway_port == 8080  # pinned unless relocated
    relocated = topology.relocate(12000)
    assert 12000 <= relocated.gateway_port < 12100  # out of a developer's 8080
    assert len(set(relocated.ports().values())) == len(relocated.ports())


def test_three_payment_instances(topology: Topology) -> None:
    three = topology.with_instances("payment", 3)
    payment = three.service("payment").instances
    assert [i.name for i in payment] == ["payment-1", "payment-2", "payment-3"]
    ports = three.ports()
    assert len(set(ports.values())) == len(ports)
    assert len({i.app_port for i in payment}) == 3
    # Other services keep their ports when one instance count changes.
    for name in ("user-1", "order-1", "notification-1"):
        assert three.instance(name).ports() == topology.instance(name).ports()


def test_instances_from_file(tmp_path: Path) -> None:
    file = tmp_path / "topology.yaml"
    file.write_text(
        "base_port: 9000\nservices:\n  user: {}\n  payment: {instances: 3}\n"
        "  order: {depends_on: [user]}\n"
    )
    t = load_topology(file, environ={})
    assert [i.name for i in t.instances] == [
        "user-1",
        "payment-1",
        "payment-2",
        "payment-3",
        "order-1",
    ]
    assert t.instance("order-1").egress_ports == {"user": t.instance("order-1").block + 3}


def test_env_overrides(topology: Topology) -> None:
    env = {"SHOPMESH_BASE_PORT": "20000", "SHOPMESH_GATEWAY_PORT": "18080"}
    t = load_topology(DEFAULT_TOPOLOGY_FILE, environ=env)
    assert t.base_port == 20000
    assert t.nats_port == 20000
    assert t.instance("user-1").app_port == 20100
    assert t.gateway_port == 18080
    assert t.service_names == topology.service_names


def test_env_override_must_be_a_number() -> None:
    with pytest.raises(TopologyError, match="SHOPMESH_BASE_PORT"):
        load_topology(DEFAULT_TOPOLOGY_FILE, environ={"SHOPMESH_BASE_PORT": "seven"})


@pytest.mark.parametrize(
    ("services", "message"),
    [
        ({"order": {"depends_on": ["ghost"]}}, "ghost"),
        ({"order": {"depends_on": ["order"]}}, "not another service"),
        ({"order": {"instances": 11}}, "instances"),
    ],
)
def test_inconsistent_files_are_refused(services: dict[str, object], message: str) -> None:
    with pytest.raises(TopologyError, match=message):
        topology_from_dict({"services": services})


def test_overlapping_gateway_pin_is_refused(topology: Topology) -> None:
    with pytest.raises(TopologyError, match="8080"):
        topology.with_ports(7980)  # user-1's app port would be 8080


def test_unknown_egress_is_an_error(topology: Topology) -> None:
    with pytest.raises(TopologyError, match="does not depend"):
        topology.instance("user-1").egress_port("order")
    with pytest.raises(TopologyError, match="does not depend"):
        topology.instance("order-1").egress_port("user")


def test_only_keeps_ports(topology: Topology) -> None:
    small = topology.only("user", "notification")
    assert [i.name for i in small.instances] == ["user-1", "notification-1"]
    assert small.instance("notification-1").ports() == topology.instance("notification-1").ports()
    assert topology.only().instances == ()
    assert [i.name for i in topology.only("order", "inventory").instances] == [
        "order-1",
        "inventory-1",
    ]
    with pytest.raises(TopologyError, match="needs inventory"):
        topology.only("order")


def test_round_trip_through_dict(topology: Topology) -> None:
    relocated = topology.relocate(15000)
    assert topology_from_dict(relocated.to_dict()) == relocated


def test_find_free_base_port_avoids_a_bound_port(topology: Topology, listener: int) -> None:
    assert not port_is_free(listener)
    # First candidate puts user-1's app port on our listener, second puts nats on it.
    busy = [listener - 100, listener]
    clear = find_free_base_port(topology)
    base = find_free_base_port(topology, [*busy, clear])
    assert base == clear
    assert listener not in topology.relocate(base).ports().values()


def test_find_free_base_port_default_search(topology: Topology, listener: int) -> None:
    base = find_free_base_port(topology)
    ports = topology.relocate(base).ports().values()
    assert listener not in ports
    assert all(port_is_free(p) for p in ports)
