"""One trace from the gateway through every service and every event, in the local sink.

A real mesh (gateway, sidecars, services, nats-server, the OTLP sink); the client sends
its own W3C traceparent, as an instrumented caller would.
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest
from shop.inventory.v1 import inventory_pb2 as inv
from shop.inventory.v1.inventory_pb2_grpc import InventoryServiceStub
from shop.order.v1 import order_pb2 as order
from shop.order.v1.order_pb2_grpc import OrderServiceStub
from shop.user.v1 import user_pb2 as user
from shop.user.v1.user_pb2_grpc import UserServiceStub

from shopmesh import traces
from shopmesh.runner import Mesh
from tests.support.mesh import running_mesh, shopmesh_cli

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

# Not user: order trusts the caller id the gateway verified, and notification knows the
# customer from UserRegistered (docs/architecture.md, "Who talks to whom").
SERVICES = ("gateway", "order-1", "inventory-1", "notification-1")


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    with running_mesh(tmp_path_factory.mktemp("observability")) as running:
        yield running


@pytest.fixture
async def gateway(mesh: Mesh) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{mesh.topology.gateway_port}") as channel:
        yield channel


def traceparent() -> tuple[str, str, str]:
    """A fresh client span: (trace id, span id, header value)."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, span_id, f"00-{trace_id}-{span_id}-01"


async def login(gateway: grpc.aio.Channel) -> tuple[tuple[str, str], ...]:
    users = UserServiceStub(gateway)
    email, password = f"t-{uuid.uuid4().hex[:10]}@example.com", "correct horse battery"
    await users.Register(user.RegisterRequest(email=email, password=password, name="Tracy"))
    reply = await users.Login(user.LoginRequest(email=email, password=password))
    return (("authorization", f"Bearer {reply.access_token}"),)


async def spans_of(
    mesh: Mesh, trace_id: str, until: set[str], timeout: float = 30
) -> list[traces.Span]:
    """The trace's spans once every name in `until` exported one (services batch)."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + timeout
    while True:
        spans = traces.find_trace(mesh.var.root / "traces", trace_id)
        if until <= {s.instance or s.service for s in spans} or loop.time() > give_up:
            return spans
        await asyncio.sleep(0.5)


async def test_one_order_is_one_trace_across_gateway_services_and_events(
    mesh: Mesh, gateway: grpc.aio.Channel
) -> None:
    auth = await login(gateway)
    trace_id, client_span, header = traceparent()
    orders = OrderServiceStub(gateway)
    placed = await orders.PlaceOrder(
        order.PlaceOrderRequest(
            idempotency_key=f"trace-{uuid.uuid4().hex}",
            lines=[order.OrderLineInput(product_id="sku-mug", quantity=1)],
        ),
        metadata=(*auth, ("traceparent", header)),
        timeout=10,
    )
    for _ in range(100):
        got = await orders.GetOrder(
            order.GetOrderRequest(order_id=placed.order.order_id), metadata=auth
        )
        if got.order.status == order.ORDER_STATUS_CONFIRMED:
            break
        await asyncio.sleep(0.1)
    assert got.order.status == order.ORDER_STATUS_CONFIRMED

    spans = await spans_of(mesh, trace_id, {*SERVICES, "payment-"})
    where = {s.instance or s.service for s in spans}
    assert set(SERVICES) <= where, where
    assert any(w.startswith("payment-") and not w.endswith("sidecar") for w in where)
    assert any(w.endswith("-sidecar") for w in where)
    names = [s.name for s in spans]
    assert "shop.order.created publish" in names
    assert "shop.order.created process" in names
    assert "shop.inventory.stock_reserved process" in names
    # Every parent is in the trace, but for the client's own span (never exported).
    assert {s.parent_span_id for s in traces.orphans(spans)} == {client_span}

    printed = await shopmesh_cli(mesh, "trace", placed.order.order_id)
    for service in (*SERVICES, "payment-"):
        assert service in printed

    logged = await shopmesh_cli(mesh, "logs", "order", "--trace", trace_id)
    assert "/shop.order.v1.OrderService/PlaceOrder OK" in logged


async def test_a_failed_call_shows_its_error_on_the_right_span(
    mesh: Mesh, gateway: grpc.aio.Channel
) -> None:
    auth = await login(gateway)
    await shopmesh_cli(mesh, "fault", "inventory-1", "abort", "--status", "14")
    trace_id, _, header = traceparent()
    try:
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await InventoryServiceStub(gateway).GetProduct(
                inv.GetProductRequest(product_id="sku-mug"),
                metadata=(*auth, ("traceparent", header)),
                timeout=5,
            )
        assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await shopmesh_cli(mesh, "fault", "inventory-1", "clear")
    spans = await spans_of(mesh, trace_id, {"gateway", "inventory-1-sidecar"})
    errors = {s.instance or s.service for s in spans if s.status == "error"}
    assert "inventory-1-sidecar" in errors  # where the fault was injected
    assert "gateway" in errors
    assert "inventory-1" not in {s.instance for s in spans}  # the app never saw the call


async def test_the_demo_journey_confirms_an_order_and_names_its_trace(mesh: Mesh) -> None:
    printed = await shopmesh_cli(mesh, "demo", "--product", "sku-filter")
    assert "registered demo-" in printed
    assert "CONFIRMED" in printed
    assert "shop.inventory.v1.StockReserved" in printed
    order_id = printed.rsplit("shopmesh trace ", 1)[1].split()[0]
    spans = await spans_of(mesh, order_id, {"gateway", "notification-1"})
    assert {s.instance or s.service for s in spans} >= {"gateway", "order-1", "notification-1"}
