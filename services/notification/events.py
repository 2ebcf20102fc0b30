"""Notification's part in the saga: a notification for each order that reaches an end.

Each handler runs inside a unit of work the bus opened (and commits). One notification
per order and kind: a repeated event changes nothing.

The recipient's address comes from notification's own copy, kept from UserRegistered
events: no call to the user service on the saga's path. Only a user it has not heard
of (registered before notification first started, or whose UserRegistered is still on
its way) is asked of the user service; an unreachable user service then raises
Unavailable, so the bus rolls back and redelivers the event later.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from functools import partial

from shop.common.v1 import common_pb2
from shop.order.v1 import events_pb2 as order_events
from shop.payment.v1 import events_pb2 as payment_events
from shop.user.v1 import events_pb2 as user_events

from services.notification.domain import (
    Kind,
    Letter,
    Money,
    Notification,
    order_cancelled,
    order_confirmed,
    payment_refunded,
)
from services.notification.storage import UnitOfWork
from services.notification.users import GrpcUserDirectory, UserDirectory
from shopmesh.errors import NotFound
from shopmesh.events import Subscription
from shopmesh.server import Runtime
from shopmesh.uow import now

log = logging.getLogger(__name__)


def _money(money: common_pb2.Money) -> Money:
    return Money(money.amount_minor, money.currency)


async def _record(
    uow: UnitOfWork,
    directory: UserDirectory,
    user_id: str,
    order_id: str,
    kind: Kind,
    write: Callable[[str], Letter],
) -> None:
    """Store the notification `write(name)` for the user, unless the order has one."""
    if await uow.notifications.exists(order_id, kind):
        return  # an earlier copy of this event (or another event of this kind) did it
    try:
        email, name = await uow.recipients.get(user_id) or await directory.email_of(user_id)
    except NotFound:
        # Kept, without an address, so the order's history stays complete.
        log.warning(
            "user %s is unknown to the user service: %s notification for order %s "
            "recorded with no recipient",
            user_id,
            kind,
            order_id,
        )
        email, name = "", ""
    letter = write(name)
    await uow.notifications.add(
        Notification(
            notification_id=str(uuid.uuid4()),
            user_id=user_id,
            order_id=order_id,
            kind=kind,
            recipient=email,
            subject=letter.subject,
            body=letter.body,
            created_at=now(),
        )
    )


async def on_order_confirmed(
    event: order_events.OrderConfirmed, uow: UnitOfWork, directory: UserDirectory
) -> None:
    total = _money(event.total)
    await _record(
        uow,
        directory,
        event.user_id,
        event.order_id,
        Kind.ORDER_CONFIRMED,
        lambda name: order_confirmed(event.order_id, name, total),
    )


async def on_order_cancelled(
    event: order_events.OrderCancelled, uow: UnitOfWork, directory: UserDirectory
) -> None:
    await _record(
        uow,
        directory,
        event.user_id,
        event.order_id,
        Kind.ORDER_CANCELLED,
        lambda name: order_cancelled(event.order_id, name, event.reason),
    )


async def on_payment_refunded(
    event: payment_events.PaymentRefunded, uow: UnitOfWork, directory: UserDirectory
) -> None:
    amount = _money(event.amount)
    await _record(
        uow,
        directory,
        event.user_id,
        event.order_id,
        Kind.PAYMENT_REFUNDED,
        lambda name: payment_refunded(event.order_id, name, amount, event.reason),
    )


async def on_user_registered(event: user_events.UserRegistered, uow: UnitOfWork) -> None:
    await uow.recipients.add(event.user_id, event.email, event.name)


def subscriptions(runtime: Runtime) -> list[Subscription]:
    directory = GrpcUserDirectory(runtime.channels["user"], runtime.config.instance)
    return [
        Subscription(
            "notification-user-registered", user_events.UserRegistered, on_user_registered
        ),
        Subscription(
            "notification-order-confirmed",
            order_events.OrderConfirmed,
            partial(on_order_confirmed, directory=directory),
        ),
        Subscription(
            "notification-order-cancelled",
            order_events.OrderCancelled,
            partial(on_order_cancelled, directory=directory),
        ),
        Subscription(
            "notification-payment-refunded",
            payment_events.PaymentRefunded,
            partial(on_payment_refunded, directory=directory),
        ),
    ]
