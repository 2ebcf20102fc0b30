"""Notification's gRPC API over a real channel, with a real database and the real user
service it depends on."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from shop.common.v1 import common_pb2
from shop.notification.v1 import notification_pb2 as pb
from shop.notification.v1.notification_pb2_grpc import NotificationServiceStub
from shop.order.v1 import events_pb2 as order_events
from shop.payment.v1 import events_pb2 as payment_events
from shop.user.v1 import user_pb2
from shop.user.v1.user_pb2_grpc import UserServiceStub

from services.notification import events
from services.notification.domain import Kind, Notification
from services.notification.main import SPEC
from services.notification.storage import UnitOfWork
from services.notification.users import GrpcUserDirectory
from services.user.main import SPEC as USER_SPEC
from shopmesh import paging
from shopmesh.db import Database
from shopmesh.uow import now
from tests.support.errors import field_violations
from tests.support.inprocess import RunningService, as_user, running

pytestmark = pytest.mark.integration


@pytest.fixture
async def user_service(tmp_path: Path) -> AsyncIterator[RunningService]:
    async with running(USER_SPEC, tmp_path / "user") as service:
        yield service


@pytest.fixture
async def notification(
    tmp_path: Path, user_service: RunningService
) -> AsyncIterator[RunningService]:
    async with running(
        SPEC, tmp_path / "notification", upstreams={"user": user_service.address}
    ) as service:
        yield service


@pytest.fixture
def stub(notification: RunningService) -> NotificationServiceStub:
    return NotificationServiceStub(notification.channel)


@pytest.fixture
async def db(notification: RunningService) -> AsyncIterator[Database]:
    """The running service's own database, to record notifications as the bus would."""
    database = Database(notification.config.db_url)
    yield database
    await database.dispose()


async def register(user_service: RunningService) -> tuple[str, str]:
    email = f"{uuid.uuid4().hex[:12]}@example.com"
    reply = await UserServiceStub(user_service.channel).Register(
        user_pb2.RegisterRequest(email=email, password="correct horse", name="Ada")
    )
    return reply.user.user_id, email


async def add(db: Database, *rows: Notification) -> None:
    async with UnitOfWork(db, "test") as uow:
        for row in rows:
            await uow.notifications.add(row)
        await uow.commit()


def made(
    user_id: str, kind: Kind = Kind.ORDER_CONFIRMED, created_at: datetime | None = None
) -> Notification:
    """A stored notification, as the event handlers would have written it."""
    return Notification(
        notification_id=str(uuid.uuid4()),
        user_id=user_id,
        order_id=str(uuid.uuid4()),
        kind=kind,
        recipient="a@example.com",
        subject="s",
        body="b",
        created_at=created_at or now(),
    )


async def test_the_caller_reads_its_own_notifications_newest_first(
    stub: NotificationServiceStub, user_service: RunningService, db: Database
) -> None:
    directory = GrpcUserDirectory(user_service.channel, "notification-1")
    user_id, email = await register(user_service)
    other_id, _ = await register(user_service)
    order_id = str(uuid.uuid4())
    money = common_pb2.Money(amount_minor=1250, currency="EUR")
    async with UnitOfWork(db, "notification-1") as uow:
        confirmed = order_events.OrderConfirmed(order_id=order_id, user_id=user_id, total=money)
        await events.on_order_confirmed(confirmed, uow, directory)
        refunded = payment_events.PaymentRefunded(order_id=order_id, user_id=user_id, amount=money)
        await events.on_payment_refunded(refunded, uow, directory)
        cancelled = order_events.OrderCancelled(
            order_id=order_id, user_id=user_id, reason="changed my mind"
        )
        await events.on_order_cancelled(cancelled, uow, directory)
        await uow.commit()
    await add(db, made(other_id))

    reply = await stub.ListNotifications(pb.ListNotificationsRequest(), metadata=as_user(user_id))
    assert [n.kind for n in reply.notifications] == [
        pb.NOTIFICATION_KIND_ORDER_CANCELLED,
        pb.NOTIFICATION_KIND_PAYMENT_REFUNDED,
        pb.NOTIFICATION_KIND_ORDER_CONFIRMED,
    ]
    assert reply.next_page_token == ""
    newest = reply.notifications[0]
    assert (newest.user_id, newest.order_id, newest.recipient) == (user_id, order_id, email)
    assert newest.subject == f"Your order {order_id} was cancelled"
    assert "changed my mind" in newest.body
    assert uuid.UUID(newest.notification_id)
    assert abs(newest.created_at.ToDatetime(tzinfo=UTC) - now()) < timedelta(minutes=1)


async def test_a_user_with_no_notifications_gets_an_empty_list(
    stub: NotificationServiceStub, db: Database
) -> None:
    await add(db, made(str(uuid.uuid4())))
    reply = await stub.ListNotifications(
        pb.ListNotificationsRequest(), metadata=as_user(str(uuid.uuid4()))
    )
    assert reply == pb.ListNotificationsResponse()


async def test_pages_cover_every_notification_once_even_with_equal_times(
    stub: NotificationServiceStub, db: Database
) -> None:
    user_id = str(uuid.uuid4())
    start = now()
    # Three share one timestamp: the id breaks the tie, so a page edge among them is safe.
    rows = [made(user_id, created_at=start) for _ in range(3)]
    rows += [made(user_id, created_at=start - timedelta(seconds=s)) for s in (-1, 1, 2, 3)]
    await add(db, *rows)
    expected = [
        r.notification_id
        for r in sorted(rows, key=lambda r: (r.created_at, r.notification_id), reverse=True)
    ]
    seen: list[str] = []
    token = ""
    while True:
        page = await stub.ListNotifications(
            pb.ListNotificationsRequest(page_size=2, page_token=token), metadata=as_user(user_id)
        )
        assert len(page.notifications) <= 2
        seen += [n.notification_id for n in page.notifications]
        token = page.next_page_token
        if not token:
            break
    assert seen == expected


async def test_page_size_zero_means_twenty(stub: NotificationServiceStub, db: Database) -> None:
    user_id = str(uuid.uuid4())
    await add(db, *(made(user_id) for _ in range(21)))
    first = await stub.ListNotifications(pb.ListNotificationsRequest(), metadata=as_user(user_id))
    assert len(first.notifications) == 20
    rest = await stub.ListNotifications(
        pb.ListNotificationsRequest(page_token=first.next_page_token), metadata=as_user(user_id)
    )
    assert (len(rest.notifications), rest.next_page_token) == (1, "")


async def test_an_anonymous_caller_is_unauthenticated(stub: NotificationServiceStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ListNotifications(pb.ListNotificationsRequest())
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize(
    ("request_message", "fields"),
    [
        (pb.ListNotificationsRequest(page_size=101), {"page_size"}),
        (pb.ListNotificationsRequest(page_size=-1), {"page_size"}),
        (pb.ListNotificationsRequest(page_token="t" * 257), {"page_token"}),
        (
            pb.ListNotificationsRequest(page_size=500, page_token="t" * 300),
            {"page_size", "page_token"},
        ),
    ],
)
async def test_invalid_requests_name_each_field(
    stub: NotificationServiceStub, request_message: pb.ListNotificationsRequest, fields: set[str]
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ListNotifications(request_message, metadata=as_user(str(uuid.uuid4())))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(raised.value)) == fields


@pytest.mark.parametrize(
    "token",
    [
        "not-a-token",
        paging.encode("o-1"),
        paging.encode("yesterday", str(uuid.uuid4())),
        paging.encode("2026-11-26T10:00:00", str(uuid.uuid4())),  # no zone: not ours
        paging.encode("0001-01-01T00:00:00+01:00", str(uuid.uuid4())),  # before year 1 in UTC
    ],
)
async def test_a_page_token_we_did_not_issue_is_invalid_argument(
    stub: NotificationServiceStub, token: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ListNotifications(
            pb.ListNotificationsRequest(page_token=token), metadata=as_user(str(uuid.uuid4()))
        )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_notifications_survive_a_restart(
    tmp_path: Path, user_service: RunningService
) -> None:
    user_id = str(uuid.uuid4())
    upstreams = {"user": user_service.address}
    request = pb.ListNotificationsRequest()
    async with running(SPEC, tmp_path / "notification", upstreams=upstreams) as first:
        database = Database(first.config.db_url)
        await add(database, made(user_id), made(user_id, Kind.ORDER_CANCELLED))
        await database.dispose()
        stub = NotificationServiceStub(first.channel)
        before = await stub.ListNotifications(request, metadata=as_user(user_id))
    async with running(SPEC, tmp_path / "notification", upstreams=upstreams) as second:
        stub = NotificationServiceStub(second.channel)
        after = await stub.ListNotifications(request, metadata=as_user(user_id))
    assert len(before.notifications) == 2
    assert after == before
