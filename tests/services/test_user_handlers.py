"""User's use cases on a real, migrated database: what they store and what they emit."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable

import pytest
import sqlalchemy as sa
from argon2 import PasswordHasher
from shop.user.v1 import events_pb2 as user_events

from services.user import handlers, passwords
from services.user.domain import EmailTaken, register
from services.user.main import SPEC
from services.user.storage import UnitOfWork
from services.user.storage.tables import users
from shopmesh.db import Database, outbox
from shopmesh.uow import now

pytestmark = pytest.mark.integration


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    database = Database(db_url)
    await database.migrate(SPEC.migrations)
    yield database
    await database.dispose()


def email() -> str:
    return f"u-{uuid.uuid4().hex[:12]}@example.com"


async def outbox_rows(db: Database) -> list[sa.Row[tuple[object, ...]]]:
    async with db.reader.connect() as conn:
        return list(await conn.execute(sa.select(outbox).order_by(outbox.c.seq)))


async def test_register_stores_the_user_and_emits_user_registered(db: Database) -> None:
    user = await handlers.register(UnitOfWork(db, "user-1"), email().upper(), "password1", "Ada")
    (row,) = await outbox_rows(db)
    assert row.subject == "shop.user.registered"
    assert row.event_type == "shop.user.v1.UserRegistered"
    event = user_events.UserRegistered.FromString(row.payload)
    assert (event.user_id, event.email, event.name) == (user.user_id, user.email, "Ada")
    assert event.email == event.email.lower()
    assert (event.meta.event_id, event.meta.producer) == (row.event_id, "user-1")


async def test_the_database_holds_an_argon2id_hash_never_the_password(db: Database) -> None:
    address = email()
    await handlers.register(UnitOfWork(db, "user-1"), address, "correct horse", "Ada")
    async with db.reader.connect() as conn:
        stored = await conn.scalar(sa.select(users.c.password_hash).where(users.c.email == address))
    assert isinstance(stored, str)
    assert stored.startswith("$argon2id$")
    assert "correct horse" not in stored
    assert PasswordHasher().verify(stored, "correct horse")


async def test_a_taken_email_changes_nothing_and_emits_nothing(db: Database) -> None:
    address = email()
    await handlers.register(UnitOfWork(db, "user-1"), address, "password1", "Ada")
    with pytest.raises(EmailTaken):
        await handlers.register(UnitOfWork(db, "user-1"), address.title(), "password2", "Bob")
    assert len(await outbox_rows(db)) == 1
    async with db.reader.connect() as conn:
        assert await conn.scalar(sa.select(sa.func.count()).select_from(users)) == 1


async def test_the_unique_index_catches_a_registration_that_raced_past_the_check(
    db: Database,
) -> None:
    address = email()
    await handlers.register(UnitOfWork(db, "user-1"), address, "password1", "Ada")
    # What a concurrent registration on PostgreSQL sees: its check ran before our commit.
    async with UnitOfWork(db, "user-1") as uow:
        with pytest.raises(EmailTaken):
            await uow.users.add(register(address, "Bob", "$argon2id$x", now()))


async def test_hashing_and_verifying_leave_the_event_loop_free() -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.001)
            ticks += 1

    async def ticks_during(operation: Awaitable[object]) -> int:
        before = ticks
        await operation
        return ticks - before

    task = asyncio.create_task(ticker())
    try:
        password_hash = await passwords.hash_password("password1")
        during = [
            await ticks_during(passwords.hash_password("password1")),
            await ticks_during(passwords.verify_password(password_hash, "password1")),
            await ticks_during(passwords.verify_password(password_hash, "password2")),
            await ticks_during(passwords.verify_password(None, "password1")),
        ]
    finally:
        task.cancel()
    # Each Argon2 run takes milliseconds; had one blocked the loop, it would not tick.
    assert all(n >= 1 for n in during), during


async def test_verifying_answers_right_and_as_slowly_for_an_unknown_email() -> None:
    password_hash = await passwords.hash_password("password1")
    assert await passwords.verify_password(password_hash, "password1")
    assert not await passwords.verify_password(password_hash, "password2")
    assert not await passwords.verify_password("not a hash", "password1")

    async def fastest(stored: str | None) -> float:
        times = []
        for _ in range(3):
            start = time.perf_counter()
            assert not await passwords.verify_password(stored, "wrong password")
            times.append(time.perf_counter() - start)
        return min(times)

    # Loose on purpose (shared CI machines): skipping the work would be ~1000x faster.
    assert await fastest(None) > 0.25 * await fastest(password_hash)
