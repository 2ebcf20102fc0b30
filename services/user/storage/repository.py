"""Loads and saves users; the only code that writes user's tables."""

from __future__ import annotations

from datetime import UTC

import sqlalchemy as sa

from services.user.domain import EmailTaken, Role, User
from services.user.storage.tables import users
from shopmesh import uow
from shopmesh.db import Connection


def _user(row: sa.Row[tuple[object, ...]]) -> User:
    user = User(**row._asdict())
    user.role = Role(user.role)
    # SQLite keeps no zone; every time we write is UTC.
    if user.created_at.tzinfo is None:
        user.created_at = user.created_at.replace(tzinfo=UTC)
    return user


# Statements built once: building a Core statement and its cache key on every call cost
# more CPU than running it (bench/profile.py, docs/benchmarks.md).
_BY_ID = sa.select(users).where(users.c.user_id == sa.bindparam("id"))
_BY_EMAIL = sa.select(users).where(users.c.email == sa.bindparam("email"))
_INSERT = sa.insert(users)


class UserRepository:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    async def get_by_email(self, email: str) -> User | None:
        return await get_user_by_email(self.conn, email)

    async def add(self, user: User) -> None:
        try:
            await self.conn.execute(_INSERT, vars(user))
        except sa.exc.IntegrityError as error:
            # Another registration with this email committed after our check.
            raise EmailTaken(user.email) from error


class UnitOfWork(uow.UnitOfWork):
    users: UserRepository

    def open_repositories(self) -> None:
        self.users = UserRepository(self.conn)


# Queries: reads that need no aggregate and no write transaction.


async def get_user(conn: Connection, user_id: str) -> User | None:
    row = (await conn.execute(_BY_ID, {"id": user_id})).first()
    return None if row is None else _user(row)


async def get_user_by_email(conn: Connection, email: str) -> User | None:
    row = (await conn.execute(_BY_EMAIL, {"email": email})).first()
    return None if row is None else _user(row)
