"""The Go and TypeScript clients, generated from proto/, shop through the real gateway.

Each runs the whole order journey, is refused without a token, and decodes the field
violations of a bad request from grpc-status-details-bin. Python and the other clients
read the same order and get byte-equal protobuf messages.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest
from shop.order.v1 import order_pb2, order_pb2_grpc

from tests.clients.shopctl import Shopctl
from tests.support.envoymesh import PASSWORD, Customer, RunningMesh

pytestmark = pytest.mark.integration

FINAL = (order_pb2.ORDER_STATUS_CONFIRMED, order_pb2.ORDER_STATUS_CANCELLED)


def ok(proc: Any) -> str:
    """stdout of a shopctl run that must succeed."""
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr.decode()}"
    return str(proc.stdout.decode())


def failure(proc: Any, exit_code: int) -> dict[str, Any]:
    """The JSON failure a shopctl -o json run writes on stderr, after its exit code."""
    stderr = proc.stderr.decode()
    assert proc.returncode == exit_code, f"exit {proc.returncode}, want {exit_code}: {stderr}"
    assert proc.stdout == b""
    reported: dict[str, Any] = json.loads(stderr)
    return reported


def email(shopctl: Shopctl) -> str:
    return f"{shopctl.language}-{uuid.uuid4().hex[:10]}@example.com"


def test_the_journey_ends_with_a_confirmed_order(mesh: RunningMesh, shopctl: Shopctl) -> None:
    account = ["--email", email(shopctl), "--password", PASSWORD, "--name", "Ada"]
    proc = shopctl(mesh.gateway, "-o", "json", "journey", *account, "--line", "sku-filter=2")
    order = json.loads(ok(proc))
    assert order["status"] == "ORDER_STATUS_CONFIRMED", order
    assert order["idempotencyKey"].startswith("shopctl-")
    assert order["lines"] == [
        {
            "productId": "sku-filter",
            "name": order["lines"][0]["name"],
            "quantity": 2,
            "unitPrice": {"amountMinor": "490", "currency": "EUR"},
            "lineTotal": {"amountMinor": "980", "currency": "EUR"},
        }
    ]
    timeline = [entry["status"] for entry in order["timeline"]]
    assert timeline[0] == "ORDER_STATUS_PENDING"
    assert timeline[-1] == "ORDER_STATUS_CONFIRMED"
    progress = [line.split()[0] for line in proc.stderr.decode().splitlines()]
    assert progress[:4] == ["register", "login", "products", "place"]

    # Again, as text for people: the same user (already registered), the saga timeline.
    text = ok(shopctl(mesh.gateway, "journey", *account))
    assert "is already registered" in text
    assert "CONFIRMED" in text.split("saga timeline:")[0]
    assert "saga timeline:" in text


def test_without_a_token_the_gateway_says_unauthenticated(
    mesh: RunningMesh, shopctl: Shopctl
) -> None:
    reported = failure(shopctl(mesh.gateway, "-o", "json", "products"), 64 + 16)
    assert reported["code"] == "UNAUTHENTICATED"
    assert "Jwt" in reported["message"]  # Envoy's jwt_authn, not a service


def test_a_bad_request_comes_back_with_its_field_violations(
    mesh: RunningMesh, shopctl: Shopctl
) -> None:
    customer = mesh.customer()
    # -validate=false: the Go client would otherwise catch it before sending.
    skip_local = ["-validate=false"] if shopctl.language == "go" else []
    bad_order = ["place", "--key", "short", "--line", "sku-espresso=0", "--line", "Bad_Id=1"]
    proc = shopctl(mesh.gateway, *skip_local, "-o", "json", *bad_order, token=customer.token)
    reported = failure(proc, 64 + 3)
    assert reported["code"] == "INVALID_ARGUMENT"
    assert "checked by shopctl" not in reported["message"]  # the service said it
    violations = {v["field"]: v["description"] for v in reported["fieldViolations"]}
    assert violations.keys() == {"idempotency_key", "lines[0].quantity", "lines[1].product_id"}
    assert violations["lines[0].quantity"].endswith("[int32.gt_lte]")


def test_the_go_client_checks_protovalidate_rules_before_sending(
    mesh: RunningMesh, go_shopctl: Shopctl
) -> None:
    customer = mesh.customer()
    bad_order = ["place", "--key", "short", "--line", "sku-espresso=0", "--line", "Bad_Id=1"]
    reported = failure(
        go_shopctl(mesh.gateway, "-o", "json", *bad_order, token=customer.token), 64 + 3
    )
    assert "checked by shopctl, not sent" in reported["message"]
    violations = {v["field"]: v["description"] for v in reported["fieldViolations"]}
    assert violations.keys() == {"idempotency_key", "lines[0].quantity", "lines[1].product_id"}


def _python_reads_a_finished_order(mesh: RunningMesh, customer: Customer) -> order_pb2.Order:
    orders = order_pb2_grpc.OrderServiceStub(mesh.channel)
    placed = orders.PlaceOrder(
        order_pb2.PlaceOrderRequest(
            idempotency_key=f"python-{uuid.uuid4().hex}",
            lines=[
                order_pb2.OrderLineInput(product_id="sku-mug", quantity=2),
                order_pb2.OrderLineInput(product_id="sku-filter", quantity=1),
            ],
        ),
        metadata=customer.metadata,
        timeout=10,
    ).order
    deadline = time.monotonic() + 30
    while True:
        read: order_pb2.Order = orders.GetOrder(
            order_pb2.GetOrderRequest(order_id=placed.order_id),
            metadata=customer.metadata,
            timeout=10,
        ).order
        if read.status in FINAL:  # nothing changes it any more: every read is equal
            return read
        assert time.monotonic() < deadline, f"order still {read.status} after 30s"
        time.sleep(0.2)


def test_python_and_each_client_read_byte_equal_orders(mesh: RunningMesh, shopctl: Shopctl) -> None:
    customer = mesh.customer()
    python_order = _python_reads_a_finished_order(mesh, customer)
    proc = shopctl(
        mesh.gateway, "-o", "binpb", "order", python_order.order_id, token=customer.token
    )
    client_bytes = proc.stdout
    assert proc.returncode == 0, proc.stderr.decode()
    assert order_pb2.Order.FromString(client_bytes) == python_order
    assert client_bytes == python_order.SerializeToString(deterministic=True)
    assert len(python_order.lines) == 2
    assert len(python_order.timeline) >= 2  # something to compare
