"""User's rules, alone: no database, no gRPC, no hashing."""

from __future__ import annotations

import uuid

import pytest

from services.user.domain import (
    LOGIN_FAILED,
    EmailTaken,
    Role,
    User,
    authenticate,
    normalize_email,
    register,
)
from shopmesh.errors import AlreadyExists, Unauthenticated
from shopmesh.identity import Role as CallerRole
from shopmesh.uow import now

pytestmark = pytest.mark.unit


def make() -> User:
    return register("Ada@Example.COM", "Ada", "$argon2id$hash", now())


def test_emails_are_compared_in_lower_case() -> None:
    assert normalize_email("  Ada.Lovelace@Example.COM ") == "ada.lovelace@example.com"


def test_a_new_user_is_a_customer_with_a_fresh_id_and_a_normalized_email() -> None:
    first, second = make(), make()
    assert first.role is Role.CUSTOMER
    assert first.email == "ada@example.com"
    assert first.name == "Ada"
    assert uuid.UUID(first.user_id).version == 4
    assert first.user_id != second.user_id


def test_roles_are_the_ones_callers_carry() -> None:
    # Tokens carry the role; the gateway turns it into shopmesh.identity's caller role.
    assert {CallerRole(role.value) for role in Role} == {CallerRole.CUSTOMER, CallerRole.ADMIN}


def test_authenticate_returns_the_user_whose_password_matches() -> None:
    user = make()
    assert authenticate(user, password_matches=True) is user


def test_unknown_email_and_wrong_password_fail_alike() -> None:
    with pytest.raises(Unauthenticated) as unknown:
        authenticate(None, password_matches=False)
    with pytest.raises(Unauthenticated) as wrong:
        authenticate(make(), password_matches=False)
    assert str(unknown.value) == str(wrong.value) == LOGIN_FAILED


def test_a_taken_email_is_already_exists() -> None:
    error = EmailTaken("ada@example.com")
    assert isinstance(error, AlreadyExists)
    assert "ada@example.com" in str(error)
