"""Loads and saves payments; the only code that writes payment's tables."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from services.payment.domain import Payment, PaymentStatus
from services.payment.storage.tables import payments
from shopmesh import uow
from shopmesh.db import Connection


def _utc(value: datetime) -> datetime:
    # SQLite keeps no offset; every timestamp we write is UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _payment(row: sa.Row[tuple[object, ...]]) -> Payment:
    values = row._asdict()
    return Payment(
        **{
            **values,
            "status": PaymentStatus(values["status"]),
            "created_at": _utc(values["created_at"]),
            "updated_at": _utc(values["updated_at"]),
        }
    )


# Statements built once: building a Core statement and its cache key on every call cost
# more CPU than running it (bench/profile.py, docs/benchmarks.md).
_LOCK_FOR_ORDER = (
    sa.select(payments).where(payments.c.order_id == sa.bindparam("order_id")).with_for_update()
)
_INSERT = sa.insert(payments)
_SAVE = (
    sa.update(payments)
    .where(payments.c.payment_id == sa.bindparam("id"))
    .values(
        status=sa.bindparam("status"),
        reason=sa.bindparam("reason"),
        updated_at=sa.bindparam("updated_at"),
    )
)
_COMPLETED_TOTAL = sa.select(sa.func.coalesce(sa.func.sum(payments.c.amount_minor), 0)).where(
    payments.c.user_id == sa.bindparam("user_id"),
    payments.c.currency == sa.bindparam("currency"),
    payments.c.status == PaymentStatus.COMPLETED,
)
_GET = sa.select(payments).where(payments.c.payment_id == sa.bindparam("id"))


class PaymentRepository:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    async def for_order(self, order_id: str) -> Payment | None:
        """The order's payment, locked until the unit of work ends (a refund must not
        interleave with another; SQLite's writer lock already ensures it)."""
        row = (await self.conn.execute(_LOCK_FOR_ORDER, {"order_id": order_id})).first()
        return None if row is None else _payment(row)

    async def add(self, payment: Payment) -> bool:
        """Insert `payment`; False when its order already has one (another instance won).

        The savepoint keeps the unit of work usable after the unique constraint fires
        (PostgreSQL aborts the whole transaction otherwise).
        """
        try:
            async with self.conn.begin_nested():
                await self.conn.execute(_INSERT, vars(payment))
        except IntegrityError:
            return False
        return True

    async def save(self, payment: Payment) -> None:
        await self.conn.execute(
            _SAVE,
            {
                "id": payment.payment_id,
                "status": payment.status,
                "reason": payment.reason,
                "updated_at": payment.updated_at,
            },
        )

    async def completed_total(self, user_id: str, currency: str) -> int:
        """What `user_id` has in COMPLETED payments in `currency` (for the per-user limit)."""
        total = await self.conn.scalar(_COMPLETED_TOTAL, {"user_id": user_id, "currency": currency})
        return int(total or 0)


class UnitOfWork(uow.UnitOfWork):
    payments: PaymentRepository

    def open_repositories(self) -> None:
        self.payments = PaymentRepository(self.conn)


# Queries: reads that need no aggregate and no write transaction.


async def get_payment(conn: Connection, payment_id: str) -> Payment | None:
    row = (await conn.execute(_GET, {"id": payment_id})).first()
    return None if row is None else _payment(row)


async def list_payments(conn: Connection, order_id: str, user_id: str | None) -> Sequence[Payment]:
    """An order's payments, oldest first; only `user_id`'s unless it is None."""
    query = (
        sa.select(payments)
        .where(payments.c.order_id == order_id)
        .order_by(payments.c.created_at, payments.c.payment_id)
    )
    if user_id is not None:
        query = query.where(payments.c.user_id == user_id)
    return [_payment(row) for row in await conn.execute(query)]
