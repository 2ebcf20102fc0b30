"""Order's part in the saga: the payment and inventory events move the order on.

Each handler runs inside a unit of work the bus opened (and commits). The order's state
machine (domain.Order.apply) decides; every event is written to the order's timeline,
even one that no longer applies (recorded as ignored), except a duplicate of an event
already there. An event for an order this service does not have is logged and dropped,
not retried: an order commits before its OrderCreated is published, so every later
event of its saga finds it; an unknown id means an order that never existed here.
"""

from __future__ import annotations

import logging

from google.protobuf.message import Message
from shop.common.v1 import common_pb2
from shop.inventory.v1 import events_pb2 as inventory_events
from shop.order.v1 import events_pb2 as order_events
from shop.payment.v1 import events_pb2 as payment_events

from services.order.domain import Outcome, SagaEvent
from services.order.handlers import total_pb
from services.order.storage import UnitOfWork
from shopmesh.events import Subscription
from shopmesh.server import Runtime
from shopmesh.uow import now

log = logging.getLogger(__name__)


def _items(items: list[common_pb2.LineItem]) -> str:
    return ", ".join(f"{item.product_id} x{item.quantity}" for item in items)


async def _apply(event: Message, order_id: str, detail: str, uow: UnitOfWork) -> None:
    order = await uow.orders.get(order_id)
    if order is None:
        log.warning("%s for unknown order %s: ignored", event.DESCRIPTOR.full_name, order_id)
        return
    event_id: str = event.meta.event_id  # type: ignore[attr-defined]  # field 1 of every event
    outcome = order.apply(SagaEvent(event.DESCRIPTOR.full_name), event_id, detail, now())
    if outcome is Outcome.DUPLICATE:
        return
    await uow.orders.save(order)
    if outcome is Outcome.CONFIRMED:
        uow.emit(
            order_events.OrderConfirmed(
                order_id=order.order_id, user_id=order.user_id, total=total_pb(order)
            )
        )
    elif outcome is Outcome.CANCELLED:
        uow.emit(
            order_events.OrderCancelled(
                order_id=order.order_id, user_id=order.user_id, reason=order.cancel_reason
            )
        )


async def on_payment_completed(event: payment_events.PaymentCompleted, uow: UnitOfWork) -> None:
    await _apply(event, event.order_id, f"payment {event.payment_id}", uow)


async def on_payment_failed(event: payment_events.PaymentFailed, uow: UnitOfWork) -> None:
    await _apply(event, event.order_id, event.reason or "payment declined", uow)


async def on_payment_refunded(event: payment_events.PaymentRefunded, uow: UnitOfWork) -> None:
    await _apply(event, event.order_id, event.reason or "payment refunded", uow)


async def on_stock_reserved(event: inventory_events.StockReserved, uow: UnitOfWork) -> None:
    await _apply(event, event.order_id, "reserved " + _items(list(event.items)), uow)


async def on_stock_rejected(event: inventory_events.StockRejected, uow: UnitOfWork) -> None:
    await _apply(event, event.order_id, event.reason or "stock rejected", uow)


async def on_stock_released(event: inventory_events.StockReleased, uow: UnitOfWork) -> None:
    await _apply(event, event.order_id, "released " + _items(list(event.items)), uow)


def subscriptions(runtime: Runtime) -> list[Subscription]:
    return [
        Subscription(
            "order-payment-completed", payment_events.PaymentCompleted, on_payment_completed
        ),
        Subscription("order-payment-failed", payment_events.PaymentFailed, on_payment_failed),
        Subscription("order-payment-refunded", payment_events.PaymentRefunded, on_payment_refunded),
        Subscription("order-stock-reserved", inventory_events.StockReserved, on_stock_reserved),
        Subscription("order-stock-rejected", inventory_events.StockRejected, on_stock_rejected),
        Subscription("order-stock-released", inventory_events.StockReleased, on_stock_released),
    ]
