"""Argon2id password hashes, computed off the event loop.

Hashing is deliberately slow (tens of milliseconds), so it runs in a worker thread: the
event loop keeps serving other calls meanwhile.
"""

from __future__ import annotations

import asyncio
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

# OWASP's minimum for Argon2id (19 MiB, 2 passes, 1 lane): modest for a demo shop.
_hasher = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)

# Verified against for unknown emails. Made once at import, so not even the first such
# login takes longer than a wrong password does.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(32))


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(_hasher.hash, password)


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


async def verify_password(password_hash: str | None, password: str) -> bool:
    """Whether `password` matches; with no hash (unknown email) it does the same work
    against a dummy hash and says False, so response times do not reveal the email."""
    if password_hash is None:
        await asyncio.to_thread(_verify, _DUMMY_HASH, password)
        return False
    return await asyncio.to_thread(_verify, password_hash, password)
