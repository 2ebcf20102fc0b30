"""Loads and saves notifications; the only code that writes notification's table."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from services.notification.domain import Kind, Notification
from services.notification.storage.tables import notifications, recipients
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
_RECIPIENT = sa.select(recipients.c.email, recipients.c.name).where(
    recipients.c.user_id == sa.bindparam("user_id")
)
# A repeated UserRegistered (a redelivery, a replay) keeps the first copy.
_ADD_RECIPIENT = {
    backend: insert(recipients).on_conflict_do_nothing()
    for backend, insert in (("postgresql", postgresql.insert), ("sqlite", sqlite.insert))
}


class NotificationRepository:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    async def exists(self, order_id: str, kind: Kind) -> bool:
        found = await self.conn.scalar(_EXISTS, {"order_id": order_id, "kind": kind})
        return found is not None

    async def add(self, notification: Notification) -> None:
        """Insert; IntegrityError if the order already has a notification of this kind."""
        await self.conn.execute(_INSERT, vars(notification))


class RecipientRepository:
    """Users' addresses, as the user service announced them."""

    def __init__(self, conn: Connection, backend: str) -> None:
        self.conn = conn
        self.backend = backend

    async def get(self, user_id: str) -> tuple[str, str] | None:
        """(email, name) of the user, None if no UserRegistered for them arrived."""
        row = (await self.conn.execute(_RECIPIENT, {"user_id": user_id})).first()
        return None if row is None else (row.email, row.name)

    async def add(self, user_id: str, email: str, name: str) -> None:
        await self.conn.execute(
            _ADD_RECIPIENT[self.backend], {"user_id": user_id, "email": email, "name": name}
        )


class UnitOfWork(uow.UnitOfWork):
    notifications: NotificationRepository
    recipients: RecipientRepository

    def open_repositories(self) -> None:
        self.notifications = NotificationRepository(self.conn)
        self.recipients = RecipientRepository(
            self.conn, "postgresql" if self.db.is_postgresql else "sqlite"
        )


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
