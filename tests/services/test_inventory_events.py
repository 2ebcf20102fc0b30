"""Inventory's saga handlers with a real unit of work on a migrated database (each backend).

Each event goes through `handle`, which does what the bus does around a handler: open a
unit of work, call the handler, commit. Stock is read and written by several units of
work at once (two consumers and AdjustStock in one process), so the last test races them.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import sqlalchemy as sa
from google.protobuf.message import Message
from shop.common.v1 import common_pb2
from shop.inventory.v1 import events_pb2 as inventory_events
from shop.order.v1 import events_pb2 as order_events
from shop.payment.v1 import events_pb2 as payment_events

from services.inventory import events, handlers
from services.inventory.domain import Product
from services.inventory.main import SPEC
from services.inventory.storage import UnitOfWork
from services.inventory.storage.repository import get_product
from shopmesh.db import Database, outbox
from shopmesh.events import RetryLater
from shopmesh.identity import Caller, Role
from shopmesh.subjects import EVENT_TYPES

pytestmark = pytest.mark.integration

Handler = Callable[[Any, UnitOfWork], Awaitable[None]]
ADMIN = Caller(str(uuid.UUID(int=1)), Role.ADMIN)


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    database = Database(db_url)
    await database.migrate(SPEC.migrations)
    async with UnitOfWork(database, "inventory-1") as uow:
        for product_id, available in (("sku-mug", 5), ("sku-kettle", 1)):
            await uow.products.add(Product(product_id, product_id, "", 1000, "EUR", available))
        await uow.commit()
    yield database
    await database.dispose()


async def handle(db: Database, handler: Handler, event: Message) -> None:
    """What the bus does around a handler: one unit of work, committed."""
    async with UnitOfWork(db, "inventory-1") as uow:
        await handler(event, uow)
        await uow.commit()


def paid(order_id: str, quantities: dict[str, int]) -> payment_events.PaymentCompleted:
    items = [common_pb2.LineItem(product_id=p, quantity=q) for p, q in quantities.items()]
    return payment_events.PaymentCompleted(order_id=order_id, items=items)


def cancelling(order_id: str) -> order_events.OrderCancellationRequested:
    return order_events.OrderCancellationRequested(order_id=order_id, reason="changed my mind")


async def stock(db: Database, product_id: str) -> tuple[int, int]:
    """(available, reserved)"""
    async with db.reader.connect() as conn:
        product = await get_product(conn, product_id)
    assert product is not None
    return product.available, product.reserved


async def emitted(db: Database) -> list[Message]:
    async with db.reader.connect() as conn:
        rows = await conn.execute(
            sa.select(outbox.c.event_type, outbox.c.payload).order_by(outbox.c.seq)
        )
        return [EVENT_TYPES[event_type].FromString(payload) for event_type, payload in rows]


async def test_a_payment_reserves_every_line_once(db: Database) -> None:
    order_id = str(uuid.uuid4())
    for _ in range(2):  # the second copy changes nothing
        await handle(
            db, events.on_payment_completed, paid(order_id, {"sku-mug": 2, "sku-kettle": 1})
        )
    assert await stock(db, "sku-mug") == (3, 2)
    assert await stock(db, "sku-kettle") == (0, 1)
    [reserved] = await emitted(db)
    assert isinstance(reserved, inventory_events.StockReserved)
    assert reserved.order_id == order_id


async def test_one_short_line_reserves_nothing(db: Database) -> None:
    order_id = str(uuid.uuid4())
    await handle(db, events.on_payment_completed, paid(order_id, {"sku-mug": 2, "sku-kettle": 2}))
    assert (await stock(db, "sku-mug"), await stock(db, "sku-kettle")) == ((5, 0), (1, 0))
    [rejected] = await emitted(db)
    assert isinstance(rejected, inventory_events.StockRejected)
    assert list(rejected.product_ids) == ["sku-kettle"]


async def test_a_cancellation_releases_once_and_waits_for_its_reservation(db: Database) -> None:
    order_id = str(uuid.uuid4())
    with pytest.raises(RetryLater, match=order_id):
        await handle(db, events.on_cancellation_requested, cancelling(order_id))
    await handle(db, events.on_payment_completed, paid(order_id, {"sku-mug": 3}))
    for _ in range(2):
        await handle(db, events.on_cancellation_requested, cancelling(order_id))
    assert await stock(db, "sku-mug") == (5, 0)
    kinds = [type(e).__name__ for e in await emitted(db)]
    assert kinds == ["StockReserved", "StockReleased"]


async def test_concurrent_reservations_and_deliveries_lose_no_unit(db: Database) -> None:
    # Every unit of work reads the stock before any writes it: without row locks,
    # PostgreSQL's READ COMMITTED lets each overwrite the others' counts.
    orders = [str(uuid.uuid4()) for _ in range(10)]
    await asyncio.gather(
        *(handle(db, events.on_payment_completed, paid(o, {"sku-mug": 1})) for o in orders),
        *(
            handlers.adjust_stock(UnitOfWork(db, "inventory-1"), ADMIN, "sku-mug", 1)
            for _ in range(3)
        ),
    )
    available, reserved = await stock(db, "sku-mug")
    confirmed = [e for e in await emitted(db) if isinstance(e, inventory_events.StockReserved)]
    assert available >= 0
    assert reserved == len(confirmed) >= 5
    assert available + reserved == 5 + 3
