"""Order's saga handlers with a real unit of work on a migrated database (each backend).

Each event goes through `handle`, which does what the bus does around a handler: open a
unit of work, call the handler, commit. Orders are placed with the real use case and a
fake of the two remote services (the boundary), so OrderCreated is checked too.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import pytest
import sqlalchemy as sa
from google.protobuf.message import Message
from shop.common.v1 import common_pb2
from shop.inventory.v1 import events_pb2 as inventory_events
from shop.order.v1 import events_pb2 as order_events
from shop.payment.v1 import events_pb2 as payment_events

from services.order import events, handlers
from services.order.domain import (
    CANCEL_ORDER,
    PLACE_ORDER,
    CatalogueEntry,
    LineInput,
    Order,
    OrderStatus,
    SagaEvent,
)
from services.order.main import SPEC
from services.order.storage import UnitOfWork
from services.order.storage.repository import get_order
from shopmesh.db import Database, outbox
from shopmesh.identity import Caller, Role
from shopmesh.server import Runtime
from shopmesh.subjects import EVENT_TYPES, SUBJECTS

pytestmark = pytest.mark.integration

E = TypeVar("E", bound=Message)
Handler = Callable[[Any, UnitOfWork], Awaitable[None]]
ITEMS = [common_pb2.LineItem(product_id="sku-mug", quantity=2)]


class Catalogue:
    """The inventory service as placing an order sees it."""

    async def product(self, product_id: str) -> CatalogueEntry | None:
        return CatalogueEntry(product_id, "Stoneware mug", 1600, "EUR")


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    database = Database(db_url)
    await database.migrate(SPEC.migrations)
    yield database
    await database.dispose()


async def handle(db: Database, handler: Handler, event: Message) -> None:
    """What the bus does around a handler: one unit of work, committed."""
    uow = UnitOfWork(db, "order-1")
    async with uow:
        await handler(event, uow)
        await uow.commit()


async def placed(db: Database) -> Order:
    caller = Caller(str(uuid.uuid4()), Role.CUSTOMER)
    return await handlers.place_order(
        UnitOfWork(db, "order-1"),
        caller,
        f"key-{uuid.uuid4()}",
        [LineInput("sku-mug", 2)],
        "",
        Catalogue(),
    )


async def reload(db: Database, order_id: str) -> Order:
    async with db.reader.connect() as conn:
        order = await get_order(conn, order_id)
    assert order is not None
    return order


async def emitted(db: Database) -> list[Message]:
    async with db.reader.connect() as conn:
        rows = await conn.execute(
            sa.select(outbox.c.event_type, outbox.c.payload).order_by(outbox.c.seq)
        )
        return [EVENT_TYPES[event_type].FromString(payload) for event_type, payload in rows]


def stamped(event: E) -> E:
    event.meta.event_id = str(uuid.uuid4())  # type: ignore[attr-defined]  # every event's field 1
    return event


def payment_completed(order_id: str) -> Message:
    return stamped(
        payment_events.PaymentCompleted(order_id=order_id, payment_id="p-1", items=ITEMS)
    )


def payment_failed(order_id: str) -> Message:
    return stamped(payment_events.PaymentFailed(order_id=order_id, reason="card declined"))


def payment_refunded(order_id: str, reason: str = "stock rejected") -> Message:
    return stamped(payment_events.PaymentRefunded(order_id=order_id, reason=reason))


def stock_reserved(order_id: str) -> Message:
    return stamped(inventory_events.StockReserved(order_id=order_id, items=ITEMS))


def stock_rejected(order_id: str) -> Message:
    return stamped(
        inventory_events.StockRejected(
            order_id=order_id, reason="insufficient stock for sku-mug", product_ids=["sku-mug"]
        )
    )


def stock_released(order_id: str) -> Message:
    return stamped(inventory_events.StockReleased(order_id=order_id, items=ITEMS))


def steps(order: Order) -> list[tuple[str, OrderStatus]]:
    return [(entry.step, entry.status) for entry in order.timeline]


async def confirmed(db: Database) -> Order:
    order = await placed(db)
    await handle(db, events.on_payment_completed, payment_completed(order.order_id))
    await handle(db, events.on_stock_reserved, stock_reserved(order.order_id))
    return order


async def test_placing_an_order_stores_it_and_emits_order_created(db: Database) -> None:
    order = await placed(db)
    stored = await reload(db, order.order_id)
    assert stored == order
    assert steps(stored) == [(PLACE_ORDER, OrderStatus.PENDING)]
    [created] = await emitted(db)
    assert isinstance(created, order_events.OrderCreated)
    assert (created.order_id, created.user_id, created.payment_card) == (
        order.order_id,
        order.user_id,
        "",
    )
    assert list(created.items) == ITEMS
    assert (created.total.amount_minor, created.total.currency) == (3200, "EUR")
    assert created.meta.producer == "order-1"


async def test_payment_then_stock_confirms_and_emits_order_confirmed(db: Database) -> None:
    order = await placed(db)
    paid = stamped(payment_events.PaymentCompleted(order_id=order.order_id))
    await handle(db, events.on_payment_completed, paid)
    assert (await reload(db, order.order_id)).status is OrderStatus.PENDING
    reserved = stamped(inventory_events.StockReserved(order_id=order.order_id, items=ITEMS))
    await handle(db, events.on_stock_reserved, reserved)

    stored = await reload(db, order.order_id)
    assert stored.status is OrderStatus.CONFIRMED
    assert steps(stored) == [
        (PLACE_ORDER, OrderStatus.PENDING),
        (SagaEvent.PAYMENT_COMPLETED, OrderStatus.PENDING),
        (SagaEvent.STOCK_RESERVED, OrderStatus.CONFIRMED),
    ]
    assert [e.event_id for e in stored.timeline] == [
        "",
        paid.meta.event_id,
        reserved.meta.event_id,
    ]
    assert stored.timeline[2].detail == "reserved sku-mug x2"
    _, confirmation = await emitted(db)
    assert isinstance(confirmation, order_events.OrderConfirmed)
    assert (confirmation.order_id, confirmation.user_id) == (order.order_id, order.user_id)
    assert confirmation.total.amount_minor == 3200


async def test_a_declined_payment_cancels_with_the_reason(db: Database) -> None:
    order = await placed(db)
    await handle(db, events.on_payment_failed, payment_failed(order.order_id))

    stored = await reload(db, order.order_id)
    assert (stored.status, stored.cancel_reason) == (OrderStatus.CANCELLED, "card declined")
    _, cancelled = await emitted(db)
    assert isinstance(cancelled, order_events.OrderCancelled)
    assert (cancelled.order_id, cancelled.user_id, cancelled.reason) == (
        order.order_id,
        order.user_id,
        "card declined",
    )


async def test_rejected_stock_waits_for_the_refund_to_cancel(db: Database) -> None:
    order = await placed(db)
    await handle(db, events.on_payment_completed, payment_completed(order.order_id))
    await handle(db, events.on_stock_rejected, stock_rejected(order.order_id))
    assert (await reload(db, order.order_id)).status is OrderStatus.PENDING
    assert len(await emitted(db)) == 1
    await handle(db, events.on_payment_refunded, payment_refunded(order.order_id))

    stored = await reload(db, order.order_id)
    assert (stored.status, stored.cancel_reason) == (OrderStatus.CANCELLED, "stock rejected")
    assert steps(stored)[-2:] == [
        (SagaEvent.STOCK_REJECTED, OrderStatus.PENDING),
        (SagaEvent.PAYMENT_REFUNDED, OrderStatus.CANCELLED),
    ]
    assert stored.timeline[-2].detail == "insufficient stock for sku-mug"
    kinds = [type(e).__name__ for e in await emitted(db)]
    assert kinds == ["OrderCreated", "OrderCancelled"]


async def test_cancel_order_starts_the_compensation_and_the_refund_ends_it(db: Database) -> None:
    order = await confirmed(db)
    caller = Caller(order.user_id, Role.CUSTOMER)
    cancelling = await handlers.cancel_order(
        UnitOfWork(db, "order-1"), caller, order.order_id, "too slow"
    )
    assert cancelling.status is OrderStatus.CANCELLING
    requested = (await emitted(db))[-1]
    assert isinstance(requested, order_events.OrderCancellationRequested)
    assert (requested.order_id, requested.user_id, requested.reason) == (
        order.order_id,
        order.user_id,
        "too slow",
    )
    await handle(db, events.on_stock_released, stock_released(order.order_id))
    assert (await reload(db, order.order_id)).status is OrderStatus.CANCELLING
    await handle(db, events.on_payment_refunded, payment_refunded(order.order_id, "cancelled"))

    stored = await reload(db, order.order_id)
    assert (stored.status, stored.cancel_reason) == (OrderStatus.CANCELLED, "too slow")
    assert steps(stored)[-3:] == [
        (CANCEL_ORDER, OrderStatus.CANCELLING),
        (SagaEvent.STOCK_RELEASED, OrderStatus.CANCELLING),
        (SagaEvent.PAYMENT_REFUNDED, OrderStatus.CANCELLED),
    ]
    cancelled = (await emitted(db))[-1]
    assert isinstance(cancelled, order_events.OrderCancelled)
    assert cancelled.reason == "too slow"


@pytest.mark.parametrize(
    ("handler", "make"),
    [
        (events.on_payment_completed, payment_completed),
        (events.on_stock_reserved, stock_reserved),
        (events.on_payment_failed, payment_failed),
        (events.on_stock_rejected, stock_rejected),
        (events.on_payment_refunded, payment_refunded),
    ],
)
async def test_a_duplicate_event_changes_nothing(
    db: Database, handler: Handler, make: Callable[[str], Message]
) -> None:
    order = await placed(db)
    event = make(order.order_id)
    await handle(db, handler, event)
    once = await reload(db, order.order_id)
    published = await emitted(db)
    await handle(db, handler, event)
    assert await reload(db, order.order_id) == once
    assert await emitted(db) == published


async def test_the_refund_before_the_release_cancels_and_the_release_is_ignored(
    db: Database,
) -> None:
    order = await confirmed(db)
    caller = Caller(order.user_id, Role.CUSTOMER)
    await handlers.cancel_order(UnitOfWork(db, "order-1"), caller, order.order_id, "")
    await handle(db, events.on_payment_refunded, payment_refunded(order.order_id))
    await handle(db, events.on_stock_released, stock_released(order.order_id))

    stored = await reload(db, order.order_id)
    assert stored.status is OrderStatus.CANCELLED
    last = stored.timeline[-1]
    assert (last.step, last.status) == (SagaEvent.STOCK_RELEASED, OrderStatus.CANCELLED)
    assert last.detail.startswith("ignored: order is cancelled")
    kinds = [type(e).__name__ for e in await emitted(db)]
    assert kinds.count("OrderCancelled") == 1


async def test_stock_reserved_before_the_payment_confirms_and_the_payment_is_history(
    db: Database,
) -> None:
    order = await placed(db)
    await handle(db, events.on_stock_reserved, stock_reserved(order.order_id))
    await handle(db, events.on_payment_completed, payment_completed(order.order_id))
    stored = await reload(db, order.order_id)
    assert stored.status is OrderStatus.CONFIRMED
    assert stored.timeline[-1].detail.startswith("ignored: order is confirmed")


async def test_events_after_the_end_are_recorded_as_ignored(db: Database) -> None:
    order = await placed(db)
    await handle(db, events.on_payment_failed, payment_failed(order.order_id))
    ended = await reload(db, order.order_id)
    published = await emitted(db)
    late: list[tuple[Handler, Message]] = [
        (events.on_stock_reserved, stock_reserved(order.order_id)),
        (events.on_payment_refunded, payment_refunded(order.order_id)),
        (events.on_payment_completed, payment_completed(order.order_id)),
    ]
    for handler, event in late:
        await handle(db, handler, event)

    stored = await reload(db, order.order_id)
    assert (stored.status, stored.cancel_reason, stored.updated_at) == (
        ended.status,
        ended.cancel_reason,
        ended.updated_at,
    )
    assert [e.status for e in stored.timeline[-3:]] == [OrderStatus.CANCELLED] * 3
    assert all(e.detail.startswith("ignored") for e in stored.timeline[-3:])
    assert await emitted(db) == published


async def test_an_event_for_an_unknown_order_is_dropped(db: Database) -> None:
    order_id = str(uuid.uuid4())
    await handle(db, events.on_stock_reserved, stock_reserved(order_id))
    await handle(db, events.on_payment_refunded, payment_refunded(order_id))
    async with db.reader.connect() as conn:
        assert await get_order(conn, order_id) is None
    assert await emitted(db) == []


def test_subscriptions_cover_the_six_events_order_consumes(db: Database) -> None:
    subscribed = events.subscriptions(Runtime(config=None, db=db))  # type: ignore[arg-type]
    assert {s.subject for s in subscribed} == {
        SUBJECTS[event]
        for event in (
            payment_events.PaymentCompleted,
            payment_events.PaymentFailed,
            payment_events.PaymentRefunded,
            inventory_events.StockReserved,
            inventory_events.StockRejected,
            inventory_events.StockReleased,
        )
    }
    assert len({s.name for s in subscribed}) == 6
    assert {s.event_type.DESCRIPTOR.full_name for s in subscribed} == set(SagaEvent)
