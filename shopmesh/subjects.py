"""Every domain event's subject: `shop.<producing service>.<event>`.

One JetStream stream per producing service captures `shop.<service>.>`.
"""

from __future__ import annotations

from google.protobuf.message import Message
from shop.inventory.v1 import events_pb2 as inventory_events
from shop.order.v1 import events_pb2 as order_events
from shop.payment.v1 import events_pb2 as payment_events
from shop.user.v1 import events_pb2 as user_events

SUBJECTS: dict[type[Message], str] = {
    user_events.UserRegistered: "shop.user.registered",
    order_events.OrderCreated: "shop.order.created",
    order_events.OrderConfirmed: "shop.order.confirmed",
    order_events.OrderCancelled: "shop.order.cancelled",
    order_events.OrderCancellationRequested: "shop.order.cancellation_requested",
    payment_events.PaymentCompleted: "shop.payment.completed",
    payment_events.PaymentFailed: "shop.payment.failed",
    payment_events.PaymentRefunded: "shop.payment.refunded",
    inventory_events.StockReserved: "shop.inventory.stock_reserved",
    inventory_events.StockRejected: "shop.inventory.stock_rejected",
    inventory_events.StockReleased: "shop.inventory.stock_released",
}

# Full protobuf name (the Shop-Event-Type header) -> message class.
EVENT_TYPES: dict[str, type[Message]] = {cls.DESCRIPTOR.full_name: cls for cls in SUBJECTS}


def subject_of(event: Message) -> str:
    return SUBJECTS[type(event)]
