"""Every service instance, started by the runner, answered by the real grpcurl binary:
health, reflection, and an order placed directly against the order service."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from shopmesh.identity import USER_ID_HEADER
from tests.support.envoymesh import RunningMesh, run_processes, running_mesh

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningMesh]:
    with running_mesh(tmp_path_factory.mktemp("grpcurl"), {}) as running:
        yield running


def grpcurl(*args: str) -> str:
    done = subprocess.run(
        ["grpcurl", "-plaintext", "-max-time", "10", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, f"grpcurl {' '.join(args)}: {done.stderr}"
    return done.stdout


def test_every_instance_is_healthy_and_reflects_its_service(mesh: RunningMesh) -> None:
    instances = mesh.mesh.topology.instances
    assert {i.name for i in instances} >= {"payment-1", "payment-2"}
    for instance in instances:
        health = json.loads(grpcurl(instance.app_addr, "grpc.health.v1.Health/Check"))
        assert health == {"status": "SERVING"}, instance.name
        listed = grpcurl(instance.app_addr, "list").split()
        service = instance.service
        assert f"shop.{service}.v1.{service.capitalize()}Service" in listed
        assert "grpc.health.v1.Health" in listed


def test_an_order_placed_directly_against_the_order_service(mesh: RunningMesh) -> None:
    topology = mesh.mesh.topology
    email = f"g-{uuid.uuid4().hex[:10]}@example.com"
    registered = json.loads(
        grpcurl(
            "-d",
            json.dumps({"email": email, "password": "correct horse battery", "name": "G"}),
            topology.instance("user-1").app_addr,
            "shop.user.v1.UserService/Register",
        )
    )
    user_id = registered["user"]["userId"]
    placed = json.loads(
        grpcurl(
            "-H",
            f"{USER_ID_HEADER}: {user_id}",
            "-d",
            json.dumps(
                {
                    "idempotency_key": f"grpcurl-{uuid.uuid4().hex}",
                    "lines": [{"product_id": "sku-mug", "quantity": 1}],
                }
            ),
            topology.instance("order-1").app_addr,
            "shop.order.v1.OrderService/PlaceOrder",
        )
    )
    assert placed["order"]["userId"] == user_id
    assert placed["order"]["status"] == "ORDER_STATUS_PENDING"
    assert placed["order"]["total"] == {"amountMinor": "1600", "currency": "EUR"}


def test_shopmesh_stop_leaves_no_process(mesh: RunningMesh) -> None:
    var: Path = mesh.var
    assert run_processes(var.resolve())  # the mesh is there...
    done = subprocess.run(
        ["shopmesh", "--var", str(var), "stop"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert run_processes(var.resolve()) == []  # ...and then nothing of it is
