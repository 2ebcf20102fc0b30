"""Payment's part in the saga: charge a new order, refund it when the saga compensates.

Each handler runs inside a unit of work the bus opened (and commits): it changes state
and emits the next event, or raises RetryLater for an event that came too early. Both
payment instances consume these events against one database, so "this order already has
a payment" is checked by state, and the unique order_id settles a race between them.
"""

from __future__ import annotations

from functools import partial

from shop.common.v1 import common_pb2
from shop.inventory.v1 import events_pb2 as inventory_events
from shop.order.v1 import events_pb2 as order_events
from shop.payment.v1 import events_pb2 as payment_events

from services.payment.domain import Charge, FakeProvider, Payment, PaymentStatus, take_payment
from services.payment.storage import UnitOfWork
from shopmesh.events import RetryLater, Subscription
from shopmesh.uow import now

ORDER_CANCELLED = "order cancelled"


def _amount(payment: Payment) -> common_pb2.Money:
    return common_pb2.Money(amount_minor=payment.amount_minor, currency=payment.currency)


async def on_order_created(
    event: order_events.OrderCreated, uow: UnitOfWork, provider: FakeProvider
) -> None:
    if await uow.payments.for_order(event.order_id) is not None:
        return  # an earlier copy of this event was handled, here or by the other instance
    charge = Charge(
        order_id=event.order_id,
        user_id=event.user_id,
        amount_minor=event.total.amount_minor,
        currency=event.total.currency,
        card=event.payment_card,
    )
    # One user's charges run one at a time, across both instances: two orders checked at
    # once could otherwise each fit under a limit that only one of them fits.
    await uow.lock(f"payment-limit:{charge.user_id}")
    completed = await uow.payments.completed_total(charge.user_id, charge.currency)
    # The unit of work's producer is this instance's name.
    payment = take_payment(charge, provider, completed, processed_by=uow.producer, at=now())
    if not await uow.payments.add(payment):
        return  # the other instance stored this order's payment first
    if payment.status is PaymentStatus.COMPLETED:
        uow.emit(
            payment_events.PaymentCompleted(
                payment_id=payment.payment_id,
                order_id=payment.order_id,
                user_id=payment.user_id,
                amount=_amount(payment),
                items=event.items,
            )
        )
    else:
        uow.emit(
            payment_events.PaymentFailed(
                payment_id=payment.payment_id,
                order_id=payment.order_id,
                user_id=payment.user_id,
                amount=_amount(payment),
                reason=payment.reason,
            )
        )


async def _refund(order_id: str, reason: str, uow: UnitOfWork, provider: FakeProvider) -> None:
    payment = await uow.payments.for_order(order_id)
    if payment is None:
        # Compensation follows our own PaymentCompleted; we have not seen the order yet.
        raise RetryLater(f"no payment for order {order_id} yet")
    if payment.status is PaymentStatus.FAILED:
        return  # nothing was charged
    # ProviderUnavailable propagates: the bus rolls back and redelivers with backoff.
    if not payment.refund(provider, reason, now()):
        return  # already refunded by an earlier copy of this event
    await uow.payments.save(payment)
    uow.emit(
        payment_events.PaymentRefunded(
            payment_id=payment.payment_id,
            order_id=payment.order_id,
            user_id=payment.user_id,
            amount=_amount(payment),
            reason=reason,
        )
    )


async def on_stock_rejected(
    event: inventory_events.StockRejected, uow: UnitOfWork, provider: FakeProvider
) -> None:
    await _refund(event.order_id, f"stock rejected: {event.reason}", uow, provider)


async def on_stock_released(
    event: inventory_events.StockReleased, uow: UnitOfWork, provider: FakeProvider
) -> None:
    await _refund(event.order_id, ORDER_CANCELLED, uow, provider)


def subscriptions(provider: FakeProvider) -> list[Subscription]:
    """The saga handlers, all sharing one provider (main builds it from the environment)."""
    return [
        Subscription(
            "payment-order-created",
            order_events.OrderCreated,
            partial(on_order_created, provider=provider),
        ),
        Subscription(
            "payment-stock-rejected",
            inventory_events.StockRejected,
            partial(on_stock_rejected, provider=provider),
        ),
        Subscription(
            "payment-stock-released",
            inventory_events.StockReleased,
            partial(on_stock_released, provider=provider),
        ),
    ]
