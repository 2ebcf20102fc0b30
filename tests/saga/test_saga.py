"""The order saga end to end: real processes, real nats-server, real databases.

Each test places orders the way a customer would and waits for the saga to end, then
runs the consistency checker over what the services themselves say.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest
from shop.notification.v1 import notification_pb2 as note
from shop.order.v1 import order_pb2 as order
from shop.payment.v1 import payment_pb2 as pay

from shopmesh.runner import Mesh
from tests.support.mesh import app_addresses, running_mesh, shopmesh_cli
from tests.support.shop import DECLINED_CARD, Customer, Shop, wait_consistent

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    with running_mesh(tmp_path_factory.mktemp("saga")) as running:
        yield running


@pytest.fixture
async def shop(mesh: Mesh) -> AsyncIterator[Shop]:
    client = Shop(app_addresses(mesh))
    yield client
    await client.close()


def steps(placed: order.Order) -> list[str]:
    return [entry.step.rsplit(".", 1)[-1] for entry in placed.timeline]


async def ended_with(shop: Shop, who: Customer, order_id: str, expected: list[str]) -> order.Order:
    """The ended order once its timeline holds the `expected` steps, in any order.

    Order consumes each event type on a consumer of its own, so an event that only adds
    to the timeline (PaymentCompleted, StockRejected, StockReleased) may be recorded
    after the one that ended the order: the steps are certain, their order is not.
    """
    loop = asyncio.get_running_loop()
    give_up = loop.time() + 30
    while True:
        done = await shop.settle(who, order_id)
        if sorted(steps(done)) == sorted(expected) or loop.time() > give_up:
            assert sorted(steps(done)) == sorted(expected), steps(done)
            return done
        await asyncio.sleep(0.05)


async def test_a_paid_and_reserved_order_is_confirmed(shop: Shop) -> None:
    before = await shop.products(["sku-mug"])
    who = await shop.customer()
    placed = await shop.place(who, {"sku-mug": 2})
    assert placed.status == order.ORDER_STATUS_PENDING

    done = await ended_with(
        shop, who, placed.order_id, ["PlaceOrder", "PaymentCompleted", "StockReserved"]
    )
    assert done.status == order.ORDER_STATUS_CONFIRMED
    [payment] = await shop.payments_of(who, placed.order_id)
    assert payment.status == pay.PAYMENT_STATUS_COMPLETED
    assert payment.amount == done.total
    after = await shop.products(["sku-mug"])
    assert after["sku-mug"].reserved == before["sku-mug"].reserved + 2
    await eventually(lambda: notified(shop, who, note.NOTIFICATION_KIND_ORDER_CONFIRMED))
    assert await wait_consistent(shop, [who], before) == []


async def test_a_declined_payment_cancels_the_order(shop: Shop) -> None:
    before = await shop.products(["sku-scale"])
    who = await shop.customer()
    placed = await shop.place(who, {"sku-scale": 1}, card=DECLINED_CARD)

    done = await ended_with(shop, who, placed.order_id, ["PlaceOrder", "PaymentFailed"])
    assert done.status == order.ORDER_STATUS_CANCELLED
    [payment] = await shop.payments_of(who, placed.order_id)
    assert payment.status == pay.PAYMENT_STATUS_FAILED
    assert await shop.products(["sku-scale"]) == before
    await eventually(lambda: notified(shop, who, note.NOTIFICATION_KIND_ORDER_CANCELLED))
    assert await wait_consistent(shop, [who], before) == []


async def test_no_stock_refunds_the_payment_then_cancels(shop: Shop) -> None:
    await shop.set_stock("sku-espresso", 1)
    before = await shop.products(["sku-espresso"])
    who = await shop.customer()
    placed = await shop.place(who, {"sku-espresso": 2})

    expected = ["PlaceOrder", "PaymentCompleted", "StockRejected", "PaymentRefunded"]
    done = await ended_with(shop, who, placed.order_id, expected)
    assert done.status == order.ORDER_STATUS_CANCELLED
    [payment] = await shop.payments_of(who, placed.order_id)
    assert payment.status == pay.PAYMENT_STATUS_REFUNDED
    assert await shop.products(["sku-espresso"]) == before
    await eventually(lambda: notified(shop, who, note.NOTIFICATION_KIND_PAYMENT_REFUNDED))
    assert await wait_consistent(shop, [who], before) == []


async def test_cancelling_a_confirmed_order_releases_then_refunds(mesh: Mesh, shop: Shop) -> None:
    before = await shop.products(["sku-kettle"])
    who = await shop.customer()
    placed = await shop.place(who, {"sku-kettle": 3})
    assert (await shop.settle(who, placed.order_id)).status == order.ORDER_STATUS_CONFIRMED

    reply = await shop.orders.CancelOrder(
        order.CancelOrderRequest(order_id=placed.order_id, reason="changed my mind"),
        metadata=who.metadata,
    )
    assert reply.order.status == order.ORDER_STATUS_CANCELLING
    saga = ["PlaceOrder", "PaymentCompleted", "StockReserved"]
    done = await ended_with(
        shop, who, placed.order_id, [*saga, "CancelOrder", "StockReleased", "PaymentRefunded"]
    )
    assert done.status == order.ORDER_STATUS_CANCELLED
    printed = await shopmesh_cli(mesh, "saga", placed.order_id)
    assert "CANCELLED" in printed
    assert "shop.inventory.v1.StockReleased" in printed
    [payment] = await shop.payments_of(who, placed.order_id)
    assert payment.status == pay.PAYMENT_STATUS_REFUNDED
    assert await shop.products(["sku-kettle"]) == before
    assert await wait_consistent(shop, [who], before) == []


async def test_contention_confirms_exactly_what_stock_allows(shop: Shop) -> None:
    await confirms_exactly_the_stock(shop, "sku-filter", units=50, orders=200)


async def confirms_exactly_the_stock(shop: Shop, product_id: str, units: int, orders: int) -> None:
    """`orders` concurrent one-unit orders from five customers for `units` in stock:
    exactly `units` confirm, stock never goes negative, and everything agrees."""
    await shop.set_stock(product_id, units)
    before = await shop.products([product_id])
    customers = [await shop.customer() for _ in range(5)]
    gate = asyncio.Semaphore(20)

    async def place(i: int) -> tuple[int, str]:
        async with gate:
            placed = await shop.place(customers[i % 5], {product_id: 1})
            return i % 5, placed.order_id

    placed = await asyncio.gather(*(place(i) for i in range(orders)))
    ended = await asyncio.gather(
        *(shop.settle(customers[c], order_id, timeout=120) for c, order_id in placed)
    )
    confirmed = [o for o in ended if o.status == order.ORDER_STATUS_CONFIRMED]
    assert len(confirmed) == units
    after = (await shop.products([product_id]))[product_id]
    assert (after.available, after.reserved) == (0, before[product_id].reserved + units)
    assert await wait_consistent(shop, customers, before) == []


async def notified(shop: Shop, who: Customer, kind: int) -> bool:
    return any(n.kind == kind for n in await shop.notifications_of(who))


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 20) -> None:
    """Wait until the async predicate `check()` holds."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + timeout
    while not await check():
        if loop.time() > give_up:
            raise AssertionError("condition never held")
        await asyncio.sleep(0.1)
