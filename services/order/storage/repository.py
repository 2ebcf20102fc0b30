"""Loads and saves orders; the only code that writes order's tables."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa

from services.order.domain import Order, OrderLine, OrderStatus, TimelineEntry
from services.order.storage.tables import order_lines, order_timeline, orders
from shopmesh import uow
from shopmesh.db import Connection
from shopmesh.errors import AlreadyExists
from shopmesh.paging import page_size

Row = sa.Row[tuple[object, ...]]

# Statements built once: building a Core statement and its cache key on every call cost
# more CPU than running it (bench/profile.py, docs/benchmarks.md).
_LINES = (
    sa.select(order_lines)
    .where(order_lines.c.order_id.in_(sa.bindparam("ids", expanding=True)))
    .order_by(order_lines.c.order_id, order_lines.c.position)
)
_TIMELINE = (
    sa.select(order_timeline)
    .where(order_timeline.c.order_id == sa.bindparam("id"))
    .order_by(order_timeline.c.seq)
)
_GET = sa.select(orders).where(orders.c.order_id == sa.bindparam("id"))
_LOCK = _GET.with_for_update()
_BY_KEY = sa.select(orders).where(
    orders.c.user_id == sa.bindparam("user_id"),
    orders.c.idempotency_key == sa.bindparam("key"),
)
_INSERT = sa.insert(orders)
_INSERT_LINE = sa.insert(order_lines)
_INSERT_ENTRY = sa.insert(order_timeline)
_SAVE = (
    sa.update(orders)
    .where(orders.c.order_id == sa.bindparam("id"))
    .values(
        status=sa.bindparam("status"),
        cancel_reason=sa.bindparam("cancel_reason"),
        updated_at=sa.bindparam("updated_at"),
    )
)


def _utc(value: datetime) -> datetime:
    # SQLite keeps no offset; every stored time is UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _order(row: Row, lines: list[OrderLine], timeline: list[TimelineEntry]) -> Order:
    return Order(
        order_id=row.order_id,
        user_id=row.user_id,
        idempotency_key=row.idempotency_key,
        status=OrderStatus(row.status),
        lines=lines,
        currency=row.currency,
        payment_card=row.payment_card,
        created_at=_utc(row.created_at),
        updated_at=_utc(row.updated_at),
        cancel_reason=row.cancel_reason,
        timeline=timeline,
    )


async def _lines(reader: Connection, order_ids: Sequence[str]) -> dict[str, list[OrderLine]]:
    rows = await reader.execute(_LINES, {"ids": list(order_ids)})
    lines: dict[str, list[OrderLine]] = {order_id: [] for order_id in order_ids}
    for row in rows:
        lines[row.order_id].append(
            OrderLine(row.product_id, row.name, row.quantity, row.unit_price_minor)
        )
    return lines


async def _timeline(reader: Connection, order_id: str) -> list[TimelineEntry]:
    rows = await reader.execute(_TIMELINE, {"id": order_id})
    return [
        TimelineEntry(
            at=_utc(row.at),
            step=row.step,
            status=OrderStatus(row.status),
            detail=row.detail,
            event_id=row.event_id,
        )
        for row in rows
    ]


async def _load(
    reader: Connection, query: sa.Select[tuple[object, ...]], parameters: dict[str, str]
) -> Order | None:
    row = (await reader.execute(query, parameters)).first()
    if row is None:
        return None
    lines = await _lines(reader, [row.order_id])
    return _order(row, lines[row.order_id], await _timeline(reader, row.order_id))


class OrderRepository:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        # Timeline entries already stored, per order seen: `save` inserts the rest.
        self._stored: dict[str, int] = {}

    async def get(self, order_id: str) -> Order | None:
        """The order, locked until the unit of work ends (saga events and CancelOrder
        for one order must not interleave; SQLite's writer lock already ensures it)."""
        order = await _load(self.conn, _LOCK, {"id": order_id})
        if order is not None:
            self._stored[order.order_id] = len(order.timeline)
        return order

    async def add(self, order: Order) -> None:
        """Insert a new order; AlreadyExists when its user already used its key."""
        try:
            await self.conn.execute(
                _INSERT,
                {
                    "order_id": order.order_id,
                    "user_id": order.user_id,
                    "idempotency_key": order.idempotency_key,
                    "status": order.status,
                    "currency": order.currency,
                    "payment_card": order.payment_card,
                    "cancel_reason": order.cancel_reason,
                    "created_at": order.created_at,
                    "updated_at": order.updated_at,
                },
            )
        except sa.exc.IntegrityError as error:
            raise AlreadyExists(
                f"an order with idempotency key {order.idempotency_key!r} exists"
            ) from error
        await self.conn.execute(
            _INSERT_LINE,
            [
                {
                    "order_id": order.order_id,
                    "position": position,
                    "product_id": line.product_id,
                    "name": line.name,
                    "quantity": line.quantity,
                    "unit_price_minor": line.unit_price_minor,
                }
                for position, line in enumerate(order.lines)
            ],
        )
        self._stored[order.order_id] = 0
        await self._insert_new_entries(order)

    async def save(self, order: Order) -> None:
        """Store the order's status and the timeline entries added since it was loaded."""
        await self.conn.execute(
            _SAVE,
            {
                "id": order.order_id,
                "status": order.status,
                "cancel_reason": order.cancel_reason,
                "updated_at": order.updated_at,
            },
        )
        await self._insert_new_entries(order)

    async def _insert_new_entries(self, order: Order) -> None:
        new = order.timeline[self._stored[order.order_id] :]
        if new:
            await self.conn.execute(
                _INSERT_ENTRY,
                [
                    {
                        "order_id": order.order_id,
                        "at": entry.at,
                        "step": entry.step,
                        "event_id": entry.event_id,
                        "status": entry.status,
                        "detail": entry.detail,
                    }
                    for entry in new
                ],
            )
        self._stored[order.order_id] = len(order.timeline)


class UnitOfWork(uow.UnitOfWork):
    orders: OrderRepository

    def open_repositories(self) -> None:
        self.orders = OrderRepository(self.conn)


# Queries: reads that need no aggregate and no write transaction.


async def get_order(conn: Connection, order_id: str) -> Order | None:
    """One order with its lines and timeline."""
    return await _load(conn, _GET, {"id": order_id})


async def find_by_key(conn: Connection, user_id: str, idempotency_key: str) -> Order | None:
    """The order `user_id` placed with `idempotency_key`, if any."""
    return await _load(conn, _BY_KEY, {"user_id": user_id, "key": idempotency_key})


async def list_orders(
    conn: Connection, user_id: str, size: int, after: tuple[datetime, str] | None
) -> tuple[Sequence[Order], tuple[datetime, str] | None]:
    """One page of the user's orders, newest first and without timelines, and the
    (created_at, order_id) key to continue after, if there is more."""
    query = (
        sa.select(orders)
        .where(orders.c.user_id == user_id)
        .order_by(orders.c.created_at.desc(), orders.c.order_id.desc())
        .limit(page_size(size) + 1)
    )
    if after is not None:
        query = query.where(sa.tuple_(orders.c.created_at, orders.c.order_id) < after)
    rows = list(await conn.execute(query))
    page = rows[: page_size(size)]
    lines = await _lines(conn, [row.order_id for row in page])
    found = [_order(row, lines[row.order_id], []) for row in page]
    more = len(rows) > len(page)
    return found, ((found[-1].created_at, found[-1].order_id) if more else None)
