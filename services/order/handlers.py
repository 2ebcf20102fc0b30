"""Order's use cases: each a short function of its input and a unit of work."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Sequence
from typing import Protocol

from shop.common.v1 import common_pb2
from shop.order.v1 import events_pb2

from services.order import domain
from services.order.domain import CatalogueEntry, LineInput, Order
from services.order.storage import UnitOfWork, repository
from shopmesh.errors import AlreadyExists, FailedPrecondition, NotFound
from shopmesh.identity import Caller
from shopmesh.uow import now

# A user id as the user service issues it: a UUID, the subject of the token the gateway
# verified. Order trusts that identity and does not ask user whether it exists (users are
# never deleted; docs/architecture.md, "Who talks to whom"). Any other caller id (a
# service's instance name, an operator token minted for "alice") owns no orders: it would
# not fit the 36-character user_id column, and notification's GetUser would refuse it as
# INVALID_ARGUMENT when the order's OrderConfirmed arrives.
_USER_ID = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)


class Dependencies(Protocol):
    """What placing an order asks other services (services.order.upstreams)."""

    async def product(self, product_id: str) -> CatalogueEntry | None: ...


def require_user_id(caller: Caller) -> None:
    """FailedPrecondition unless the caller's id is a user id (a UUID)."""
    if not _USER_ID.match(caller.user_id):
        raise FailedPrecondition(f"no user {caller.user_id}: orders belong to a user id (a UUID)")


def total_pb(order: Order) -> common_pb2.Money:
    return common_pb2.Money(amount_minor=order.total_minor, currency=order.currency)


async def place_order(
    uow: UnitOfWork,
    caller: Caller,
    idempotency_key: str,
    lines: Sequence[LineInput],
    payment_card: str,
    dependencies: Dependencies,
) -> Order:
    """A new PENDING order, or the order this user first placed with this key (whatever
    lines this request carries: a retry must never place a second order)."""
    require_user_id(caller)
    first = await _by_key(uow, caller.user_id, idempotency_key)
    if first is not None:
        return first
    # Ask the dependencies before the unit of work opens: no write transaction is ever
    # held across a network call.
    entries = await asyncio.gather(*(dependencies.product(line.product_id) for line in lines))
    catalogue = {entry.product_id: entry for entry in entries if entry is not None}
    order = domain.place(
        str(uuid.uuid4()), caller.user_id, idempotency_key, lines, catalogue, payment_card, now()
    )
    try:
        async with uow:
            await uow.orders.add(order)
            uow.emit(
                events_pb2.OrderCreated(
                    order_id=order.order_id,
                    user_id=order.user_id,
                    items=[
                        common_pb2.LineItem(product_id=line.product_id, quantity=line.quantity)
                        for line in order.lines
                    ],
                    total=total_pb(order),
                    payment_card=order.payment_card,
                )
            )
            await uow.commit()
    except AlreadyExists:
        # A concurrent request with the same key committed first: its order is the answer.
        first = await _by_key(uow, caller.user_id, idempotency_key)
        if first is None:
            raise
        return first
    return order


async def cancel_order(uow: UnitOfWork, caller: Caller, order_id: str, reason: str) -> Order:
    async with uow:
        order = await uow.orders.get(order_id)
        if order is None or order.user_id != caller.user_id:
            raise NotFound(f"no order {order_id}")
        order.request_cancellation(reason, now())
        await uow.orders.save(order)
        uow.emit(
            events_pb2.OrderCancellationRequested(
                order_id=order.order_id, user_id=order.user_id, reason=order.cancel_reason
            )
        )
        await uow.commit()
    return order


async def _by_key(uow: UnitOfWork, user_id: str, idempotency_key: str) -> Order | None:
    async with uow.db.reader.connect() as conn:
        return await repository.find_by_key(conn, user_id, idempotency_key)
