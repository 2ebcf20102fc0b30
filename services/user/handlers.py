"""User's use cases: each a short function of its input and a unit of work (or, for
reads, the read-only engine)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from shop.user.v1 import events_pb2 as user_events

from services.user import domain, passwords
from services.user.domain import EmailTaken, User, authenticate, normalize_email
from services.user.storage import UnitOfWork, repository
from services.user.tokens import SigningKey, issue_token
from shopmesh.db import Engine
from shopmesh.errors import NotFound
from shopmesh.identity import Caller
from shopmesh.uow import now


@dataclass(frozen=True)
class LoggedIn:
    user: User
    access_token: str
    expires_at: datetime


async def register(uow: UnitOfWork, email: str, password: str, name: str) -> User:
    # Hash before the transaction starts, so the slow part holds no write lock.
    user = domain.register(email, name, await passwords.hash_password(password), now())
    async with uow:
        if await uow.users.get_by_email(user.email) is not None:
            raise EmailTaken(user.email)
        await uow.users.add(user)
        uow.emit(user_events.UserRegistered(user_id=user.user_id, email=user.email, name=name))
        await uow.commit()
    return user


async def login(
    reader: Engine, key: SigningKey, ttl_seconds: int, email: str, password: str
) -> LoggedIn:
    async with reader.connect() as conn:
        found = await repository.get_user_by_email(conn, normalize_email(email))
    matches = await passwords.verify_password(found.password_hash if found else None, password)
    user = authenticate(found, matches)
    token, expires_at = issue_token(key, user.user_id, user.role, ttl_seconds)
    return LoggedIn(user, token, expires_at)


async def get_user(reader: Engine, caller: Caller, user_id: str) -> User:
    user_id = user_id.lower()  # UUIDs compare case-insensitively; ours are stored lower
    user = None
    # Someone else's id reads as unknown, so ids of other users cannot be probed.
    if caller.may_read(user_id):
        async with reader.connect() as conn:
            user = await repository.get_user(conn, user_id)
    if user is None:
        raise NotFound(f"no user {user_id}")
    return user
