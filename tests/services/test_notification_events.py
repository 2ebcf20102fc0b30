"""Notification's saga handlers on a real, migrated database, with the real user service
as the directory: one notification per order and kind, whatever arrives twice."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import sqlalchemy as sa
from shop.common.v1 import common_pb2
from shop.order.v1 import events_pb2 as order_events
from shop.payment.v1 import events_pb2 as payment_events
from shop.user.v1 import events_pb2 as user_events
from shop.user.v1 import user_pb2
from shop.user.v1.user_pb2_grpc import UserServiceStub
from sqlalchemy.exc import IntegrityError

from services.notification import events
from services.notification.domain import Kind, Notification
from services.notification.main import SPEC
from services.notification.storage import UnitOfWork
from services.notification.storage.tables import notifications
from services.notification.users import GrpcUserDirectory, UserDirectory
from services.user.main import SPEC as USER_SPEC
from shopmesh.config import ServiceConfig
from shopmesh.db import Database, outbox
from shopmesh.errors import Unavailable
from shopmesh.server import Runtime
from shopmesh.uow import now
from tests.support.inprocess import RunningService, free_port, running

pytestmark = pytest.mark.integration

INSTANCE = "notification-1"
EUR = common_pb2.Money(amount_minor=1250, currency="EUR")


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    database = Database(db_url)
    await database.migrate(SPEC.migrations)
    yield database
    await database.dispose()


@pytest.fixture
async def user_service(tmp_path: Path) -> AsyncIterator[RunningService]:
    async with running(USER_SPEC, tmp_path / "user") as service:
        yield service


@pytest.fixture
def directory(user_service: RunningService) -> GrpcUserDirectory:
    return GrpcUserDirectory(user_service.channel, INSTANCE)


@pytest.fixture
async def unreachable() -> AsyncIterator[GrpcUserDirectory]:
    """A directory whose user service is down: every lookup is Unavailable."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{free_port()}") as channel:
        yield GrpcUserDirectory(channel, INSTANCE)


async def register(user_service: RunningService, name: str = "Ada") -> tuple[str, str]:
    """A new user of the real user service: (user_id, email)."""
    email = f"{uuid.uuid4().hex[:12]}@example.com"
    reply = await UserServiceStub(user_service.channel).Register(
        user_pb2.RegisterRequest(email=email, password="correct horse", name=name)
    )
    return reply.user.user_id, email


async def handle(db: Database, handler: Any, event: Any, directory: UserDirectory) -> None:
    """What the bus does around a handler: open a unit of work, call, commit."""
    async with UnitOfWork(db, INSTANCE) as uow:
        await handler(event, uow, directory)
        await uow.commit()


async def stored(db: Database) -> list[sa.Row[Any]]:
    async with db.reader.connect() as conn:
        return list(await conn.execute(sa.select(notifications).order_by(notifications.c.kind)))


async def outbox_rows(db: Database) -> int:
    async with db.reader.connect() as conn:
        return (await conn.scalar(sa.select(sa.func.count()).select_from(outbox))) or 0


def confirmed(user_id: str, order_id: str) -> order_events.OrderConfirmed:
    return order_events.OrderConfirmed(order_id=order_id, user_id=user_id, total=EUR)


def cancelled(user_id: str, order_id: str) -> order_events.OrderCancelled:
    return order_events.OrderCancelled(order_id=order_id, user_id=user_id, reason="out of beans")


def refunded(user_id: str, order_id: str) -> payment_events.PaymentRefunded:
    return payment_events.PaymentRefunded(
        payment_id=str(uuid.uuid4()),
        order_id=order_id,
        user_id=user_id,
        amount=common_pb2.Money(amount_minor=1890, currency="EUR"),
        reason="stock rejected",
    )


async def test_order_confirmed_is_addressed_to_the_users_email(
    db: Database, user_service: RunningService, directory: GrpcUserDirectory
) -> None:
    user_id, email = await register(user_service, "Ada")
    order_id = str(uuid.uuid4())
    await handle(db, events.on_order_confirmed, confirmed(user_id, order_id), directory)
    [row] = await stored(db)
    assert (row.user_id, row.order_id, row.kind) == (user_id, order_id, Kind.ORDER_CONFIRMED)
    assert row.recipient == email
    assert row.subject == f"Your order {order_id} is confirmed"
    assert row.body.startswith("Hello Ada,")
    assert "12.50 EUR" in row.body
    assert await outbox_rows(db) == 0  # notification publishes nothing


async def test_order_cancelled_gives_the_reason(
    db: Database, user_service: RunningService, directory: GrpcUserDirectory
) -> None:
    user_id, email = await register(user_service)
    order_id = str(uuid.uuid4())
    await handle(db, events.on_order_cancelled, cancelled(user_id, order_id), directory)
    [row] = await stored(db)
    assert (row.kind, row.recipient) == (Kind.ORDER_CANCELLED, email)
    assert "out of beans" in row.body


async def test_payment_refunded_gives_the_amount(
    db: Database, user_service: RunningService, directory: GrpcUserDirectory
) -> None:
    user_id, email = await register(user_service)
    order_id = str(uuid.uuid4())
    await handle(db, events.on_payment_refunded, refunded(user_id, order_id), directory)
    [row] = await stored(db)
    assert (row.kind, row.recipient) == (Kind.PAYMENT_REFUNDED, email)
    assert row.subject == f"Refund of 18.90 EUR for order {order_id}"
    assert "stock rejected" in row.body


@pytest.mark.parametrize(
    ("handler", "make"),
    [
        (events.on_order_confirmed, confirmed),
        (events.on_order_cancelled, cancelled),
        (events.on_payment_refunded, refunded),
    ],
)
async def test_a_repeated_event_is_a_no_op(
    db: Database,
    user_service: RunningService,
    directory: GrpcUserDirectory,
    unreachable: GrpcUserDirectory,
    handler: Any,
    make: Any,
) -> None:
    user_id, _ = await register(user_service)
    order_id = str(uuid.uuid4())
    await handle(db, handler, make(user_id, order_id), directory)
    before = await stored(db)
    # Another copy (a fresh event id, as a re-emitting producer would send) with the user
    # service down: it must not even need the directory.
    await handle(db, handler, make(user_id, order_id), unreachable)
    assert await stored(db) == before
    assert len(before) == 1


async def test_each_kind_is_recorded_once_per_order_in_any_order(
    db: Database, user_service: RunningService, directory: GrpcUserDirectory
) -> None:
    user_id, _ = await register(user_service)
    order_id = str(uuid.uuid4())
    # The refund may arrive before the cancellation it caused.
    await handle(db, events.on_payment_refunded, refunded(user_id, order_id), directory)
    await handle(db, events.on_order_cancelled, cancelled(user_id, order_id), directory)
    await handle(db, events.on_payment_refunded, refunded(user_id, order_id), directory)
    assert [row.kind for row in await stored(db)] == [
        Kind.ORDER_CANCELLED,
        Kind.PAYMENT_REFUNDED,
    ]


async def test_the_table_refuses_a_second_notification_of_a_kind(db: Database) -> None:
    order_id = str(uuid.uuid4())

    def notification(kind: Kind) -> Notification:
        return Notification(str(uuid.uuid4()), "u", order_id, kind, "", "s", "b", now())

    async with UnitOfWork(db, INSTANCE) as uow:
        await uow.notifications.add(notification(Kind.ORDER_CANCELLED))
        await uow.notifications.add(notification(Kind.PAYMENT_REFUNDED))
        await uow.commit()
    async with UnitOfWork(db, INSTANCE) as uow:
        with pytest.raises(IntegrityError):
            await uow.notifications.add(notification(Kind.ORDER_CANCELLED))
    assert len(await stored(db)) == 2


async def test_an_unknown_user_is_recorded_without_a_recipient(
    db: Database, directory: GrpcUserDirectory, caplog: pytest.LogCaptureFixture
) -> None:
    user_id, order_id = str(uuid.uuid4()), str(uuid.uuid4())
    with caplog.at_level(logging.WARNING, logger="services.notification.events"):
        await handle(db, events.on_order_confirmed, confirmed(user_id, order_id), directory)
    [row] = await stored(db)
    assert (row.user_id, row.recipient) == (user_id, "")
    assert row.body.startswith("Hello,")
    assert f"user {user_id} is unknown" in caplog.text


async def test_an_unreachable_user_service_leaves_the_event_for_a_retry(
    db: Database, unreachable: GrpcUserDirectory
) -> None:
    event = confirmed(str(uuid.uuid4()), str(uuid.uuid4()))
    with pytest.raises(Unavailable):
        await handle(db, events.on_order_confirmed, event, unreachable)
    assert await stored(db) == []


async def test_subscriptions_bind_the_user_service_to_each_handler(
    db: Database, user_service: RunningService, tmp_path: Path
) -> None:
    config = ServiceConfig(
        service="notification",
        instance=INSTANCE,
        grpc_addr="127.0.0.1:0",
        var_dir=tmp_path,
        db_url=str(db.url),
        nats_url="",
        upstreams={"user": user_service.address},
    )
    runtime = Runtime(config=config, db=db, channels={"user": user_service.channel})
    subscriptions = {s.event_type: s for s in events.subscriptions(runtime)}
    assert {s.subject for s in subscriptions.values()} == {
        "shop.user.registered",
        "shop.order.confirmed",
        "shop.order.cancelled",
        "shop.payment.refunded",
    }
    user_id, email = await register(user_service)
    order_id = str(uuid.uuid4())
    for event in (
        confirmed(user_id, order_id),
        cancelled(user_id, order_id),
        refunded(user_id, order_id),
    ):
        async with UnitOfWork(db, INSTANCE) as uow:
            await subscriptions[type(event)].handler(event, uow)  # as the bus calls it
            await uow.commit()
    rows = await stored(db)
    assert [row.kind for row in rows] == sorted(Kind)
    assert {row.recipient for row in rows} == {email}


async def test_a_registered_user_is_addressed_from_notifications_own_copy(
    db: Database, unreachable: GrpcUserDirectory
) -> None:
    """After UserRegistered, the saga's notifications need no user service (it is down)."""
    user_id = str(uuid.uuid4())
    registered = user_events.UserRegistered(
        user_id=user_id, email="grace@example.com", name="Grace"
    )
    async with UnitOfWork(db, INSTANCE) as uow:
        await events.on_user_registered(registered, uow)
        await uow.commit()
    order_id = str(uuid.uuid4())
    await handle(db, events.on_order_confirmed, confirmed(user_id, order_id), unreachable)
    [row] = await stored(db)
    assert row.recipient == "grace@example.com"
    assert row.body.startswith("Hello Grace,")


async def test_a_repeated_user_registered_keeps_the_first_copy(db: Database) -> None:
    user_id = str(uuid.uuid4())
    for email in ("first@example.com", "second@example.com"):
        async with UnitOfWork(db, INSTANCE) as uow:
            await events.on_user_registered(
                user_events.UserRegistered(user_id=user_id, email=email, name="Ada"), uow
            )
            await uow.commit()
    async with UnitOfWork(db, INSTANCE) as uow:
        assert await uow.recipients.get(user_id) == ("first@example.com", "Ada")


async def test_a_user_not_heard_of_is_asked_of_the_user_service(
    db: Database, user_service: RunningService, directory: GrpcUserDirectory
) -> None:
    user_id, email = await register(user_service, "Ada")  # no UserRegistered handled here
    async with UnitOfWork(db, INSTANCE) as uow:
        assert await uow.recipients.get(user_id) is None
    await handle(db, events.on_order_confirmed, confirmed(user_id, str(uuid.uuid4())), directory)
    [row] = await stored(db)
    assert row.recipient == email
