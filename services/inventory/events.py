"""Inventory's part in the saga: reserve on payment, release on cancellation.

Each handler runs inside a unit of work the bus opened (and commits): it changes state
and emits the next event, or raises RetryLater for an event that came too early.
"""

from __future__ import annotations

from shop.common.v1 import common_pb2
from shop.inventory.v1 import events_pb2 as inventory_events
from shop.order.v1 import events_pb2 as order_events
from shop.payment.v1 import events_pb2 as payment_events

from services.inventory.domain import Item, Shortage, release, reserve
from services.inventory.storage import UnitOfWork
from shopmesh.events import RetryLater, Subscription
from shopmesh.server import Runtime


def _items(items: list[Item]) -> list[common_pb2.LineItem]:
    return [common_pb2.LineItem(product_id=i.product_id, quantity=i.quantity) for i in items]


async def on_payment_completed(event: payment_events.PaymentCompleted, uow: UnitOfWork) -> None:
    if await uow.reservations.get(event.order_id) is not None:
        return  # already reserved by an earlier copy of this payment
    items = [Item(i.product_id, i.quantity) for i in event.items]
    products = await uow.products.get_many(i.product_id for i in items)
    try:
        reservation = reserve(event.order_id, items, products)
    except Shortage as shortage:
        uow.emit(
            inventory_events.StockRejected(
                order_id=event.order_id, reason=str(shortage), product_ids=shortage.product_ids
            )
        )
        return
    for product in products.values():
        await uow.products.save(product)
    await uow.reservations.add(reservation)
    uow.emit(inventory_events.StockReserved(order_id=event.order_id, items=_items(items)))


async def on_cancellation_requested(
    event: order_events.OrderCancellationRequested, uow: UnitOfWork
) -> None:
    reservation = await uow.reservations.get(event.order_id)
    if reservation is None:
        # The order was confirmed, so its reservation exists; we have not seen it yet.
        raise RetryLater(f"no reservation for order {event.order_id} yet")
    products = await uow.products.get_many(i.product_id for i in reservation.items)
    if not release(reservation, products):
        return
    for product in products.values():
        await uow.products.save(product)
    await uow.reservations.save(reservation)
    uow.emit(
        inventory_events.StockReleased(order_id=event.order_id, items=_items(reservation.items))
    )


def subscriptions(runtime: Runtime) -> list[Subscription]:
    return [
        Subscription(
            "inventory-payment-completed", payment_events.PaymentCompleted, on_payment_completed
        ),
        Subscription(
            "inventory-cancellation-requested",
            order_events.OrderCancellationRequested,
            on_cancellation_requested,
        ),
    ]
