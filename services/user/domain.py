"""User's rules: one account per email (compared case-insensitively), new accounts are
customers, and a failed login never says whether the email exists. Plain Python: no
gRPC, no SQL, no password hashing (that is storage of a secret, not a rule)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from shopmesh.errors import AlreadyExists, Unauthenticated

# One message for an unknown email and a wrong password, so callers cannot probe emails.
LOGIN_FAILED = "wrong email or password"


class Role(StrEnum):
    # The same values as shopmesh.identity.Role: they travel in tokens and metadata.
    CUSTOMER = "customer"
    ADMIN = "admin"


class EmailTaken(AlreadyExists):
    def __init__(self, email: str) -> None:
        super().__init__(f"email {email} is already registered")


@dataclass
class User:
    user_id: str
    email: str
    name: str
    role: Role
    password_hash: str
    created_at: datetime


def normalize_email(email: str) -> str:
    """The form emails are stored and compared in."""
    return email.strip().lower()


def register(email: str, name: str, password_hash: str, created_at: datetime) -> User:
    """A new customer account."""
    return User(
        user_id=str(uuid.uuid4()),
        email=normalize_email(email),
        name=name,
        role=Role.CUSTOMER,
        password_hash=password_hash,
        created_at=created_at,
    )


def authenticate(user: User | None, password_matches: bool) -> User:
    """The user a login proves, or Unauthenticated with the same message either way."""
    if user is None or not password_matches:
        raise Unauthenticated(LOGIN_FAILED)
    return user
