"""Loads and saves notifications; the only code that writes notification's table."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa

from services.notification.domain import Kind, Notification
from services.notification.storage.tables import notifications
from shopmesh import uow
from shopmesh.db import Connection
from shopmesh.paging import page_size

# The sort key of ListNotifications: (created_at, notification_id), newest first.
Key = tuple[datetime, str]


def _notification(row: sa.Row[tuple[object, ...]]) -> Notification:
    values = row._asdict()
    created_at: datetime = values["created_at"]
    # SQLite keeps no zone; every timestamp we write is UTC.
    if created_at.tzinfo is None:
        values["created_at"] = created_at.replace(tzinfo=UTC)
    values["kind"] = Kind(values["kind"])
    return Notification(**values)


# Statements built once: building a Core statement and its cache key on every call cost
# more CPU than running it (bench/profile.py, docs/benchmarks.md).
_EXISTS = sa.select(notifications.c.notification_id).where(
    notifications.c.order_id == sa.bindparam("order_id"),
    notifications.c.kind == sa.bindparam("kind"),
)
_INSERT = sa.insert(notifications)


class NotificationRepository:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    async def exists(self, order_id: str, kind: Kind) -> bool:
        found = await self.conn.scalar(_EXISTS, {"order_id": order_id, "kind": kind})
        return found is not None

    async def add(self, notification: Notification) -> None:
        """Insert; IntegrityError if the order already has a notification of this kind."""
        await self.conn.execute(_INSERT, vars(notification))


class UnitOfWork(uow.UnitOfWork):
    notifications: NotificationRepository

    def open_repositories(self) -> None:
        self.notifications = NotificationRepository(self.conn)


# Queries: reads that need no aggregate and no write transaction.


async def list_notifications(
    conn: Connection, user_id: str, size: int, after: Key | None
) -> tuple[Sequence[Notification], Key | None]:
    """One page of a user's notifications, newest first, and the key to continue after."""
    c = notifications.c
    query = (
        sa.select(notifications)
        .where(c.user_id == user_id)
        .order_by(c.created_at.desc(), c.notification_id.desc())
        .limit(page_size(size) + 1)
    )
    if after is not None:
        created_at, notification_id = after
        query = query.where(
            sa.or_(
                c.created_at < created_at,
                sa.and_(c.created_at == created_at, c.notification_id < notification_id),
            )
        )
    rows = [_notification(row) for row in await conn.execute(query)]
    page = rows[: page_size(size)]
    if len(rows) == len(page):
        return page, None
    return page, (page[-1].created_at, page[-1].notification_id)
