"""Payment's saga handlers with a real unit of work on a migrated database (each backend).

Each call goes through `handle`, which does what the bus does around a handler: open a
unit of work, call the handler, commit. Two payment instances share one database, so the
races below use two units of work, and two `Database` objects as two processes would.
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

from services.payment import events
from services.payment.domain import (
    CARD_DECLINED,
    OVER_LIMIT,
    TEST_DECLINED_CARD,
    FakeProvider,
    Payment,
    PaymentStatus,
    ProviderUnavailable,
)
from services.payment.main import REFUND_FAILURES_ENV, SPEC, USER_LIMIT_ENV, provider_from_env
from services.payment.storage import UnitOfWork
from services.payment.storage.repository import list_payments
from shopmesh.config import ServiceConfig
from shopmesh.db import Database, outbox
from shopmesh.events import RetryLater
from shopmesh.server import Runtime
from shopmesh.subjects import EVENT_TYPES, SUBJECTS
from shopmesh.uow import now

pytestmark = pytest.mark.integration

Handler = Callable[[Any, UnitOfWork, FakeProvider], Awaitable[None]]
ITEMS = [
    common_pb2.LineItem(product_id="sku-mug", quantity=2),
    common_pb2.LineItem(product_id="sku-kettle", quantity=1),
]


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    database = Database(db_url)
    await database.migrate(SPEC.migrations)
    yield database
    await database.dispose()


async def handle(
    db: Database,
    handler: Handler,
    event: Message,
    provider: FakeProvider,
    instance: str = "payment-1",
) -> None:
    """What the bus does around a handler: one unit of work, committed."""
    uow = UnitOfWork(db, instance)
    async with uow:
        await handler(event, uow, provider)
        await uow.commit()


def order_created(
    user_id: str | None = None, amount_minor: int = 4500, card: str = "", currency: str = "EUR"
) -> order_events.OrderCreated:
    event = order_events.OrderCreated(
        order_id=str(uuid.uuid4()),
        user_id=user_id or str(uuid.uuid4()),
        items=ITEMS,
        total=common_pb2.Money(amount_minor=amount_minor, currency=currency),
        payment_card=card,
    )
    event.meta.event_id = str(uuid.uuid4())
    return event


def stock_rejected(order_id: str) -> inventory_events.StockRejected:
    return inventory_events.StockRejected(
        order_id=order_id, reason="insufficient stock for sku-mug", product_ids=["sku-mug"]
    )


def stock_released(order_id: str) -> inventory_events.StockReleased:
    return inventory_events.StockReleased(order_id=order_id, items=ITEMS)


async def emitted(db: Database) -> list[Message]:
    async with db.reader.connect() as conn:
        rows = await conn.execute(
            sa.select(outbox.c.event_type, outbox.c.payload).order_by(outbox.c.seq)
        )
        return [EVENT_TYPES[event_type].FromString(payload) for event_type, payload in rows]


async def payments_for(db: Database, order_id: str) -> list[Payment]:
    async with db.reader.connect() as conn:
        return list(await list_payments(conn, order_id, None))


async def only_payment(db: Database, order_id: str) -> Payment:
    [payment] = await payments_for(db, order_id)
    return payment


# -- charging --------------------------------------------------------------------------------


async def test_order_created_charges_and_emits_payment_completed(db: Database) -> None:
    event = order_created(amount_minor=4500)
    await handle(db, events.on_order_created, event, FakeProvider(), instance="payment-2")

    payment = await only_payment(db, event.order_id)
    assert payment.status is PaymentStatus.COMPLETED
    assert (payment.user_id, payment.amount_minor, payment.currency) == (event.user_id, 4500, "EUR")
    assert payment.processed_by == "payment-2"
    [completed] = await emitted(db)
    assert isinstance(completed, payment_events.PaymentCompleted)
    assert (completed.payment_id, completed.order_id, completed.user_id) == (
        payment.payment_id,
        event.order_id,
        event.user_id,
    )
    assert completed.amount == event.total
    assert list(completed.items) == ITEMS
    assert completed.meta.producer == "payment-2"
    assert completed.meta.event_id


async def test_the_test_card_stores_a_failed_payment_and_emits_payment_failed(
    db: Database,
) -> None:
    event = order_created(card=TEST_DECLINED_CARD)
    await handle(db, events.on_order_created, event, FakeProvider())

    payment = await only_payment(db, event.order_id)
    assert (payment.status, payment.reason) == (PaymentStatus.FAILED, CARD_DECLINED)
    [failed] = await emitted(db)
    assert isinstance(failed, payment_events.PaymentFailed)
    assert (failed.payment_id, failed.order_id, failed.user_id, failed.reason) == (
        payment.payment_id,
        event.order_id,
        event.user_id,
        CARD_DECLINED,
    )
    assert failed.amount == event.total


async def test_the_per_user_limit_sums_the_users_completed_payments(db: Database) -> None:
    provider = FakeProvider(user_limit_minor=10_000)
    user = str(uuid.uuid4())
    first, over, exact = (order_created(user, n) for n in (6000, 4001, 4000))
    others = [order_created(amount_minor=9000), order_created(user, 9000, currency="USD")]
    for event in (first, over, exact, *others):
        await handle(db, events.on_order_created, event, provider)

    assert (await only_payment(db, first.order_id)).status is PaymentStatus.COMPLETED
    declined = await only_payment(db, over.order_id)
    assert (declined.status, declined.reason) == (PaymentStatus.FAILED, OVER_LIMIT)
    assert (await only_payment(db, exact.order_id)).status is PaymentStatus.COMPLETED
    # Another user, and the same user in another currency, have limits of their own.
    for event in others:
        assert (await only_payment(db, event.order_id)).status is PaymentStatus.COMPLETED
    kinds = [type(e).__name__ for e in await emitted(db)]
    assert (
        kinds
        == ["PaymentCompleted", "PaymentFailed", "PaymentCompleted"] + ["PaymentCompleted"] * 2
    )


async def test_a_refunded_payment_no_longer_counts_towards_the_limit(db: Database) -> None:
    provider = FakeProvider(user_limit_minor=10_000)
    user = str(uuid.uuid4())
    first, second = order_created(user, 8000), order_created(user, 8000)
    await handle(db, events.on_order_created, first, provider)
    await handle(db, events.on_stock_rejected, stock_rejected(first.order_id), provider)
    await handle(db, events.on_order_created, second, provider)
    assert (await only_payment(db, second.order_id)).status is PaymentStatus.COMPLETED


async def test_a_duplicate_order_created_is_a_no_op(db: Database) -> None:
    event = order_created()
    await handle(db, events.on_order_created, event, FakeProvider(), instance="payment-1")
    before = await only_payment(db, event.order_id)
    # Even a provider that would now decline it: the order is paid already.
    await handle(db, events.on_order_created, event, FakeProvider(0), instance="payment-2")
    assert await payments_for(db, event.order_id) == [before]
    assert len(await emitted(db)) == 1


@pytest.mark.parametrize("processes", [1, 2], ids=["one-engine", "two-engines"])
async def test_instances_racing_on_one_order_charge_it_once(db_url: str, processes: int) -> None:
    first = Database(db_url)
    await first.migrate(SPEC.migrations)
    second = Database(db_url) if processes == 2 else first
    # Handlers as the bus gets them, one provider per instance.
    on_created = [events.subscriptions(FakeProvider())[0].handler for _ in range(2)]
    orders = [order_created() for _ in range(8)]

    async def instance(db: Database, name: str, handler: Callable[..., Awaitable[None]]) -> None:
        for event in orders:
            uow = UnitOfWork(db, name)
            async with uow:
                await handler(event, uow)
                await uow.commit()

    try:
        await asyncio.gather(
            instance(first, "payment-1", on_created[0]),
            instance(second, "payment-2", on_created[1]),
        )
        for event in orders:
            assert len(await payments_for(first, event.order_id)) == 1
        published = await emitted(first)
        charged = [e.order_id for e in published if isinstance(e, payment_events.PaymentCompleted)]
        assert len(published) == len(charged)
        assert sorted(charged) == sorted(e.order_id for e in orders)
    finally:
        await first.dispose()
        await second.dispose()


async def test_instances_charging_one_users_orders_at_once_keep_the_limit(db_url: str) -> None:
    first = Database(db_url)
    await first.migrate(SPEC.migrations)
    second = Database(db_url)
    provider = FakeProvider(user_limit_minor=10_000)
    user = str(uuid.uuid4())
    orders = [order_created(user, 3000) for _ in range(8)]
    try:
        # Every order at once, alternating instances: each check of the limit overlaps
        # the others (PostgreSQL's READ COMMITTED would let all of them pass unlocked).
        await asyncio.gather(
            *(
                handle(db, events.on_order_created, event, provider, instance=f"payment-{i % 2}")
                for i, (db, event) in enumerate(zip([first, second] * 4, orders, strict=True))
            )
        )
        statuses = [(await only_payment(first, e.order_id)).status for e in orders]
        assert statuses.count(PaymentStatus.COMPLETED) == 3  # 9,000 of 10,000
        assert statuses.count(PaymentStatus.FAILED) == 5
    finally:
        await first.dispose()
        await second.dispose()


async def test_the_unique_order_id_settles_a_race_the_read_missed(db: Database) -> None:
    event = order_created()
    await handle(db, events.on_order_created, event, FakeProvider(), instance="payment-1")
    winner = await only_payment(db, event.order_id)
    loser = Payment(**{**vars(winner), "payment_id": str(uuid.uuid4()), "processed_by": "x"})
    uow = UnitOfWork(db, "payment-2")
    async with uow:
        assert await uow.payments.add(loser) is False
        # The unit of work is still usable: the bus commits its processed_events row.
        uow.emit(stock_released(event.order_id))
        await uow.commit()
    assert await payments_for(db, event.order_id) == [winner]
    assert len(await emitted(db)) == 2


# -- refunding -------------------------------------------------------------------------------


async def paid(db: Database, provider: FakeProvider, amount_minor: int = 4500) -> str:
    event = order_created(amount_minor=amount_minor)
    await handle(db, events.on_order_created, event, provider)
    return event.order_id


async def test_stock_rejected_refunds_and_emits_payment_refunded(db: Database) -> None:
    provider = FakeProvider()
    order_id = await paid(db, provider, 4500)
    await handle(db, events.on_stock_rejected, stock_rejected(order_id), provider)

    payment = await only_payment(db, order_id)
    reason = "stock rejected: insufficient stock for sku-mug"
    assert (payment.status, payment.reason) == (PaymentStatus.REFUNDED, reason)
    assert payment.updated_at > payment.created_at
    refunded = (await emitted(db))[-1]
    assert isinstance(refunded, payment_events.PaymentRefunded)
    assert (refunded.payment_id, refunded.order_id, refunded.user_id, refunded.reason) == (
        payment.payment_id,
        order_id,
        payment.user_id,
        reason,
    )
    assert (refunded.amount.amount_minor, refunded.amount.currency) == (4500, "EUR")


async def test_stock_released_refunds_a_cancelled_order(db: Database) -> None:
    provider = FakeProvider()
    order_id = await paid(db, provider)
    await handle(db, events.on_stock_released, stock_released(order_id), provider)

    payment = await only_payment(db, order_id)
    assert (payment.status, payment.reason) == (PaymentStatus.REFUNDED, "order cancelled")
    refunded = (await emitted(db))[-1]
    assert isinstance(refunded, payment_events.PaymentRefunded)
    assert refunded.reason == "order cancelled"


async def test_a_second_refund_event_is_a_no_op(db: Database) -> None:
    provider = FakeProvider()
    order_id = await paid(db, provider)
    await handle(db, events.on_stock_released, stock_released(order_id), provider)
    refunded = await only_payment(db, order_id)
    await handle(db, events.on_stock_released, stock_released(order_id), provider)
    await handle(db, events.on_stock_rejected, stock_rejected(order_id), provider)
    assert await only_payment(db, order_id) == refunded
    kinds = [type(e).__name__ for e in await emitted(db)]
    assert kinds == ["PaymentCompleted", "PaymentRefunded"]


async def test_a_refund_before_the_payment_is_retried_later(db: Database) -> None:
    order_id = str(uuid.uuid4())
    for handler, event in (
        (events.on_stock_rejected, stock_rejected(order_id)),
        (events.on_stock_released, stock_released(order_id)),
    ):
        with pytest.raises(RetryLater, match=order_id):
            await handle(db, handler, event, FakeProvider())
    assert await payments_for(db, order_id) == []
    assert await emitted(db) == []


async def test_a_failed_payment_has_nothing_to_refund(db: Database) -> None:
    event = order_created(card=TEST_DECLINED_CARD)
    provider = FakeProvider()
    await handle(db, events.on_order_created, event, provider)
    failed = await only_payment(db, event.order_id)
    await handle(db, events.on_stock_rejected, stock_rejected(event.order_id), provider)
    await handle(db, events.on_stock_released, stock_released(event.order_id), provider)
    assert await only_payment(db, event.order_id) == failed
    assert [type(e).__name__ for e in await emitted(db)] == ["PaymentFailed"]


async def test_transient_refund_failures_roll_back_then_the_retry_succeeds(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(REFUND_FAILURES_ENV, "2")
    # The handlers as main wires them, reading the environment at start-up.
    assert SPEC.subscriptions is not None
    subscribed = SPEC.subscriptions(Runtime(ServiceConfig.from_env("payment"), db))
    handlers = {s.event_type: s.handler for s in subscribed}
    created = order_created()

    async def deliver(event: Message) -> None:
        uow = UnitOfWork(db, "payment-1")
        async with uow:
            await handlers[type(event)](event, uow)
            await uow.commit()

    await deliver(created)
    for _ in range(2):  # what the bus redelivers, with backoff
        with pytest.raises(ProviderUnavailable):
            await deliver(stock_released(created.order_id))
        assert (await only_payment(db, created.order_id)).status is PaymentStatus.COMPLETED
        assert len(await emitted(db)) == 1
    await deliver(stock_released(created.order_id))
    assert (await only_payment(db, created.order_id)).status is PaymentStatus.REFUNDED
    assert [type(e).__name__ for e in await emitted(db)] == ["PaymentCompleted", "PaymentRefunded"]


# -- wiring ----------------------------------------------------------------------------------


def test_subscriptions_cover_the_events_payment_consumes() -> None:
    subscribed = events.subscriptions(FakeProvider())
    assert [(s.name, s.subject) for s in subscribed] == [
        ("payment-order-created", SUBJECTS[order_events.OrderCreated]),
        ("payment-stock-rejected", SUBJECTS[inventory_events.StockRejected]),
        ("payment-stock-released", SUBJECTS[inventory_events.StockReleased]),
    ]


def test_the_provider_is_configured_from_the_environment() -> None:
    default = provider_from_env({})
    assert default.user_limit_minor == 500_000
    configured = provider_from_env({USER_LIMIT_ENV: "1234", REFUND_FAILURES_ENV: "1"})
    assert configured.user_limit_minor == 1234
    with pytest.raises(ProviderUnavailable):
        configured.refund(
            Payment("p", "o", "u", 1, "EUR", PaymentStatus.COMPLETED, "", "", now(), now())
        )
    with pytest.raises(ValueError, match="invalid literal"):
        provider_from_env({USER_LIMIT_ENV: "lots"})
