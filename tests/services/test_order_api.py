"""Order's gRPC API over a real channel, with a real database and the real inventory
service it calls; a slow inventory is a tiny gRPC server of the test's own. No user
service runs: order trusts the caller the gateway verified, and never calls user."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from shop.inventory.v1 import events_pb2 as inventory_events
from shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from shop.order.v1 import order_pb2 as pb
from shop.order.v1.order_pb2_grpc import OrderServiceStub

from services.inventory.main import SPEC as INVENTORY_SPEC
from services.order import events
from services.order.main import DEPENDENCY_TIMEOUT_ENV, SPEC, dependency_timeout
from services.order.storage import UnitOfWork
from shopmesh.db import Database
from tests.support.errors import field_violations
from tests.support.inprocess import RunningService, as_user, free_port, running

pytestmark = pytest.mark.integration

Metadata = tuple[tuple[str, str], ...]
# gRPC rounds deadlines on the wire; a remaining time may read a hair above what was set.
SLACK = 0.01


@pytest.fixture(scope="module")
async def inventory(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningService]:
    async with running(INVENTORY_SPEC, tmp_path_factory.mktemp("inventory")) as service:
        yield service


def upstreams(inventory: RunningService) -> dict[str, str]:
    return {"inventory": inventory.address}


@pytest.fixture(scope="module")
async def order(
    tmp_path_factory: pytest.TempPathFactory, inventory: RunningService
) -> AsyncIterator[RunningService]:
    var_dir = tmp_path_factory.mktemp("order")
    async with running(SPEC, var_dir, upstreams(inventory)) as service:
        yield service


@pytest.fixture
def stub(order: RunningService) -> OrderServiceStub:
    return OrderServiceStub(order.channel)


def new_customer() -> Metadata:
    """What the gateway sets for a customer after verifying the token the user service
    issued them: its subject, a user id (order asks user nothing about it)."""
    return as_user(str(uuid.uuid4()))


@pytest.fixture
def customer() -> Metadata:
    return new_customer()


def request(
    *lines: tuple[str, int], key: str | None = None, card: str = ""
) -> pb.PlaceOrderRequest:
    return pb.PlaceOrderRequest(
        idempotency_key=key or f"key-{uuid.uuid4()}",
        lines=[pb.OrderLineInput(product_id=p, quantity=q) for p, q in lines],
        payment_card=card,
    )


async def place(stub: OrderServiceStub, caller: Metadata) -> pb.Order:
    reply: pb.PlaceOrderResponse = await stub.PlaceOrder(request(("sku-mug", 1)), metadata=caller)
    return reply.order


async def fails(call: object, code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call  # type: ignore[misc]
    assert raised.value.code() == code, raised.value.details()
    return raised.value


async def confirm(order: RunningService, order_id: str) -> None:
    """Drive an order to CONFIRMED as the bus would: StockReserved into its own database."""
    db = Database(order.config.db_url)
    try:
        reserved = inventory_events.StockReserved(order_id=order_id)
        reserved.meta.event_id = str(uuid.uuid4())
        async with UnitOfWork(db, "order-1") as uow:
            await events.on_stock_reserved(reserved, uow)
            await uow.commit()
    finally:
        await db.dispose()


# -- PlaceOrder ------------------------------------------------------------------------------


async def test_place_order_prices_every_line_from_inventory(
    stub: OrderServiceStub, inventory: RunningService, customer: Metadata
) -> None:
    prices = {}
    for sku in ("sku-mug", "sku-kettle"):
        reply = await inventory_pb2_grpc.InventoryServiceStub(inventory.channel).GetProduct(
            inventory_pb2.GetProductRequest(product_id=sku)
        )
        prices[sku] = reply.product
    reply = await stub.PlaceOrder(
        request(("sku-mug", 2), ("sku-kettle", 1), key="key-prices-1", card="4242"),
        metadata=customer,
    )
    order = reply.order
    assert order.status == pb.ORDER_STATUS_PENDING
    assert uuid.UUID(order.order_id)
    assert (order.user_id, order.idempotency_key) == (customer[0][1], "key-prices-1")
    assert [(line.product_id, line.name, line.quantity) for line in order.lines] == [
        ("sku-mug", prices["sku-mug"].name, 2),
        ("sku-kettle", prices["sku-kettle"].name, 1),
    ]
    for line in order.lines:
        assert line.unit_price == prices[line.product_id].price
        assert line.line_total.amount_minor == line.unit_price.amount_minor * line.quantity
    expected = 2 * prices["sku-mug"].price.amount_minor + prices["sku-kettle"].price.amount_minor
    assert (order.total.amount_minor, order.total.currency) == (expected, "EUR")
    assert [(e.step, e.status, e.event_id) for e in order.timeline] == [
        ("PlaceOrder", pb.ORDER_STATUS_PENDING, "")
    ]
    assert order.created_at == order.updated_at
    got = await stub.GetOrder(pb.GetOrderRequest(order_id=order.order_id), metadata=customer)
    assert got.order == order


async def test_the_same_key_returns_the_first_order(
    stub: OrderServiceStub, customer: Metadata
) -> None:
    first = await stub.PlaceOrder(request(("sku-mug", 1), key="key-retry-1"), metadata=customer)
    # Even with other lines: the key names the first order, never a second one.
    again = await stub.PlaceOrder(request(("sku-scale", 3), key="key-retry-1"), metadata=customer)
    assert again.order == first.order
    listed = await stub.ListOrders(pb.ListOrdersRequest(), metadata=customer)
    assert [o.order_id for o in listed.orders] == [first.order.order_id]
    # Another user's key is another key.
    other = new_customer()
    theirs = await stub.PlaceOrder(request(("sku-mug", 1), key="key-retry-1"), metadata=other)
    assert theirs.order.order_id != first.order.order_id


async def test_concurrent_requests_with_one_key_place_one_order(
    stub: OrderServiceStub, customer: Metadata
) -> None:
    replies = await asyncio.gather(
        *(
            stub.PlaceOrder(request(("sku-filter", n), key="key-race-1"), metadata=customer)
            for n in range(1, 9)
        )
    )
    assert len({reply.order.order_id for reply in replies}) == 1
    listed = await stub.ListOrders(pb.ListOrdersRequest(), metadata=customer)
    assert len(listed.orders) == 1


async def test_an_unknown_product_is_named(stub: OrderServiceStub, customer: Metadata) -> None:
    key = "key-unknown-1"
    error = await fails(
        stub.PlaceOrder(request(("sku-mug", 1), ("sku-unicorn", 1), key=key), metadata=customer),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert "sku-unicorn" in (error.details() or "")
    # Nothing was stored, so the key is still free for the corrected order.
    listed = await stub.ListOrders(pb.ListOrdersRequest(), metadata=customer)
    assert list(listed.orders) == []
    placed = await stub.PlaceOrder(request(("sku-mug", 1), key=key), metadata=customer)
    assert placed.order.idempotency_key == key


@pytest.mark.parametrize(
    "caller",
    [
        as_user(str(uuid.UUID(int=0)), "admin"),  # `shopmesh token`'s default operator
        as_user(str(uuid.uuid4())),  # a user id that never registered
    ],
)
async def test_a_verified_user_id_orders_without_asking_user(
    stub: OrderServiceStub, caller: Metadata
) -> None:
    # Order does not ask user whether the caller exists: the gateway verified a token
    # signed with the mesh's key, so an id that never registered can only come from a
    # trusted operator (`shopmesh token --user ID`). No user service runs here at all.
    assert SPEC.dependencies == ["inventory"]
    placed = await place(stub, caller)
    assert (placed.user_id, placed.status) == (caller[0][1], pb.ORDER_STATUS_PENDING)
    got = await stub.GetOrder(pb.GetOrderRequest(order_id=placed.order_id), metadata=caller)
    assert got.order == placed


@pytest.mark.parametrize(
    "caller",
    [
        as_user("not-a-uuid"),
        as_user("payment-1", "service"),  # a service calling on its own behalf
        as_user("alice", "admin"),  # `shopmesh token --user alice`
    ],
)
async def test_a_caller_id_that_is_not_a_user_id_cannot_order(
    stub: OrderServiceStub, caller: Metadata
) -> None:
    user_id = caller[0][1]
    error = await fails(
        stub.PlaceOrder(request(("sku-mug", 1)), metadata=caller),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert f"no user {user_id}" in (error.details() or "")
    listed = await stub.ListOrders(pb.ListOrdersRequest(), metadata=caller)
    assert list(listed.orders) == []


@pytest.mark.parametrize(
    ("bad", "fields"),
    [
        (pb.PlaceOrderRequest(idempotency_key="short"), {"idempotency_key", "lines"}),
        (
            request(("sku-mug", 0), ("Not A Sku", 1), card="4242-4242"),
            {"lines[0].quantity", "lines[1].product_id", "payment_card"},
        ),
        (request(("sku-mug", 1), ("sku-mug", 2)), {"lines"}),
        (request(("sku-mug", 1001)), {"lines[0].quantity"}),
    ],
)
async def test_invalid_orders_name_each_field(
    stub: OrderServiceStub, customer: Metadata, bad: pb.PlaceOrderRequest, fields: set[str]
) -> None:
    error = await fails(stub.PlaceOrder(bad, metadata=customer), grpc.StatusCode.INVALID_ARGUMENT)
    assert set(field_violations(error)) == fields


# -- dependencies down or slow ---------------------------------------------------------------


async def test_a_dependency_down_is_unavailable(tmp_path: Path, customer: Metadata) -> None:
    # Inventory is order's one sync dependency (user is none: the tests above order with
    # no user service running).
    async with contextlib.AsyncExitStack() as stack:
        # A private instance of inventory to stop.
        inventory = await stack.enter_async_context(running(INVENTORY_SPEC, tmp_path / "inventory"))
        async with running(SPEC, tmp_path / "order", upstreams(inventory)) as order:
            stub = OrderServiceStub(order.channel)
            await place(stub, customer)
            await stack.aclose()
            error = await fails(
                stub.PlaceOrder(request(("sku-mug", 1)), metadata=customer),
                grpc.StatusCode.UNAVAILABLE,
            )
    assert error.details() == "inventory is unavailable (UNAVAILABLE)"


class SlowInventory(inventory_pb2_grpc.InventoryServiceServicer):
    """Answers GetProduct only after `delay` seconds; records the deadline it was given."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.deadlines: list[float] = []

    async def GetProduct(
        self,
        request: inventory_pb2.GetProductRequest,
        context: grpc.aio.ServicerContext[
            inventory_pb2.GetProductRequest, inventory_pb2.GetProductResponse
        ],
    ) -> inventory_pb2.GetProductResponse:
        self.deadlines.append(context.time_remaining() or 0.0)
        await asyncio.sleep(self.delay)
        return inventory_pb2.GetProductResponse()


@contextlib.asynccontextmanager
async def slow_inventory(fake: SlowInventory) -> AsyncIterator[str]:
    server = grpc.aio.server()
    inventory_pb2_grpc.add_InventoryServiceServicer_to_server(fake, server)
    health_servicer = health.aio.HealthServicer()  # order waits for SERVING before it serves
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    address = f"127.0.0.1:{free_port()}"
    server.add_insecure_port(address)
    await server.start()
    try:
        yield address
    finally:
        await server.stop(0)


async def test_a_short_client_deadline_bounds_the_dependency_calls(
    tmp_path: Path, customer: Metadata
) -> None:
    fake = SlowInventory(delay=5)
    async with (
        slow_inventory(fake) as address,
        running(SPEC, tmp_path, {"inventory": address}) as order,
    ):
        started = time.monotonic()
        await fails(
            OrderServiceStub(order.channel).PlaceOrder(
                request(("sku-mug", 1)), metadata=customer, timeout=0.5
            ),
            grpc.StatusCode.DEADLINE_EXCEEDED,
        )
        assert time.monotonic() - started < 2
    # Inventory got what was left of the client's deadline, not order's own 2 s.
    [given] = fake.deadlines
    assert 0 < given <= 0.5 + SLACK


async def test_a_slow_dependency_times_out_within_a_long_client_deadline(
    tmp_path: Path, customer: Metadata, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DEPENDENCY_TIMEOUT_ENV, "0.3")
    fake = SlowInventory(delay=5)
    async with (
        slow_inventory(fake) as address,
        running(SPEC, tmp_path, {"inventory": address}) as order,
    ):
        started = time.monotonic()
        error = await fails(
            OrderServiceStub(order.channel).PlaceOrder(
                request(("sku-mug", 1)), metadata=customer, timeout=10
            ),
            grpc.StatusCode.DEADLINE_EXCEEDED,
        )
        assert time.monotonic() - started < 2
    assert "inventory" in (error.details() or "")
    assert 0 < fake.deadlines[0] <= 0.3 + SLACK


# -- GetOrder and ListOrders -----------------------------------------------------------------


async def test_another_users_order_is_not_found(stub: OrderServiceStub, customer: Metadata) -> None:
    mine = await place(stub, customer)
    other = new_customer()
    for caller, order_id in ((other, mine.order_id), (customer, str(uuid.uuid4()))):
        await fails(
            stub.GetOrder(pb.GetOrderRequest(order_id=order_id), metadata=caller),
            grpc.StatusCode.NOT_FOUND,
        )
        await fails(
            stub.CancelOrder(pb.CancelOrderRequest(order_id=order_id), metadata=caller),
            grpc.StatusCode.NOT_FOUND,
        )


async def test_list_orders_pages_newest_first_and_only_the_callers(
    stub: OrderServiceStub, customer: Metadata
) -> None:
    other = new_customer()
    placed = [await place(stub, customer) for _ in range(5)]
    theirs = await place(stub, other)
    seen: list[pb.Order] = []
    token = ""
    while True:
        page = await stub.ListOrders(
            pb.ListOrdersRequest(page_size=2, page_token=token), metadata=customer
        )
        assert len(page.orders) <= 2
        seen += page.orders
        token = page.next_page_token
        if not token:
            break
    assert [o.order_id for o in seen] == [o.order_id for o in reversed(placed)]
    assert all(not o.timeline and o.lines for o in seen)
    listed = await stub.ListOrders(pb.ListOrdersRequest(), metadata=other)
    assert [o.order_id for o in listed.orders] == [theirs.order_id]


async def test_reads_need_a_caller_and_valid_input(stub: OrderServiceStub) -> None:
    order_id = str(uuid.uuid4())
    for call in (
        stub.PlaceOrder(request(("sku-mug", 1))),
        stub.GetOrder(pb.GetOrderRequest(order_id=order_id)),
        stub.ListOrders(pb.ListOrdersRequest()),
        stub.CancelOrder(pb.CancelOrderRequest(order_id=order_id)),
    ):
        await fails(call, grpc.StatusCode.UNAUTHENTICATED)
    caller = as_user(str(uuid.uuid4()))
    error = await fails(
        stub.GetOrder(pb.GetOrderRequest(order_id="nope"), metadata=caller),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert set(field_violations(error)) == {"order_id"}
    error = await fails(
        stub.CancelOrder(pb.CancelOrderRequest(order_id="x", reason="r" * 201), metadata=caller),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert set(field_violations(error)) == {"order_id", "reason"}
    error = await fails(
        stub.ListOrders(pb.ListOrdersRequest(page_size=101), metadata=caller),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert set(field_violations(error)) == {"page_size"}
    for token in ("not-a-token", "WyJhIiwiYiJd"):  # the second is ["a","b"]: not a time
        await fails(
            stub.ListOrders(pb.ListOrdersRequest(page_token=token), metadata=caller),
            grpc.StatusCode.INVALID_ARGUMENT,
        )


# -- CancelOrder -----------------------------------------------------------------------------


async def test_cancel_order_follows_the_rules(
    stub: OrderServiceStub, order: RunningService, customer: Metadata
) -> None:
    placed = await place(stub, customer)
    cancel = pb.CancelOrderRequest(order_id=placed.order_id, reason="changed my mind")
    error = await fails(
        stub.CancelOrder(cancel, metadata=customer), grpc.StatusCode.FAILED_PRECONDITION
    )
    assert "still being processed" in (error.details() or "")

    await confirm(order, placed.order_id)
    reply = await stub.CancelOrder(cancel, metadata=customer)
    assert reply.order.status == pb.ORDER_STATUS_CANCELLING
    assert reply.order.cancel_reason == "changed my mind"
    assert [(e.step, e.status) for e in reply.order.timeline] == [
        ("PlaceOrder", pb.ORDER_STATUS_PENDING),
        ("shop.inventory.v1.StockReserved", pb.ORDER_STATUS_CONFIRMED),
        ("CancelOrder", pb.ORDER_STATUS_CANCELLING),
    ]
    got = await stub.GetOrder(pb.GetOrderRequest(order_id=placed.order_id), metadata=customer)
    assert got.order == reply.order

    error = await fails(
        stub.CancelOrder(cancel, metadata=customer), grpc.StatusCode.FAILED_PRECONDITION
    )
    assert "already cancelling" in (error.details() or "")


# -- restart ---------------------------------------------------------------------------------


async def test_orders_survive_a_restart(
    tmp_path: Path, inventory: RunningService, customer: Metadata
) -> None:
    first_request = request(("sku-espresso", 2))
    async with running(SPEC, tmp_path, upstreams(inventory)) as first:
        stub = OrderServiceStub(first.channel)
        placed = (await stub.PlaceOrder(first_request, metadata=customer)).order
        await confirm(first, placed.order_id)
        before = await stub.GetOrder(
            pb.GetOrderRequest(order_id=placed.order_id), metadata=customer
        )
    async with running(SPEC, tmp_path, upstreams(inventory)) as second:
        stub = OrderServiceStub(second.channel)
        after = await stub.GetOrder(pb.GetOrderRequest(order_id=placed.order_id), metadata=customer)
        again = await stub.PlaceOrder(first_request, metadata=customer)
    assert after == before
    assert after.order.status == pb.ORDER_STATUS_CONFIRMED
    assert again.order.order_id == placed.order_id


def test_the_dependency_timeout_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DEPENDENCY_TIMEOUT_ENV, raising=False)
    assert dependency_timeout() == 2
    monkeypatch.setenv(DEPENDENCY_TIMEOUT_ENV, "0.75")
    assert dependency_timeout() == 0.75
    for bad in ("0", "-1", "nan", "soon"):
        monkeypatch.setenv(DEPENDENCY_TIMEOUT_ENV, bad)
        with pytest.raises(ValueError, match=f"{DEPENDENCY_TIMEOUT_ENV}|could not convert"):
            dependency_timeout()
