"""User's gRPC API over a real channel, with a real database and key directory."""

from __future__ import annotations

import json
import stat
import uuid
from collections.abc import AsyncIterator, Awaitable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import jwt
import pytest
from shop.user.v1 import user_pb2 as pb
from shop.user.v1.user_pb2_grpc import UserServiceStub

from services.user import tokens
from services.user.main import SPEC
from tests.support.errors import field_violations
from tests.support.inprocess import RunningService, as_user, running

pytestmark = pytest.mark.integration

ADMIN = as_user(str(uuid.uuid4()), "admin")
SERVICE = as_user("order-1", "service")
PASSWORD = "correct horse battery"


@pytest.fixture
async def user_service(tmp_path: Path) -> AsyncIterator[RunningService]:
    async with running(SPEC, tmp_path) as service:
        yield service


@pytest.fixture
def stub(user_service: RunningService) -> UserServiceStub:
    return UserServiceStub(user_service.channel)


def jwks(service: RunningService) -> Path:
    return tokens.keys_dir(service.config.var_dir) / tokens.JWKS_FILE


def new_email() -> str:
    return f"Shopper-{uuid.uuid4().hex[:12]}@Example.com"


async def register(stub: UserServiceStub, email: str | None = None) -> pb.User:
    reply = await stub.Register(
        pb.RegisterRequest(email=email or new_email(), password=PASSWORD, name="Ada")
    )
    user: pb.User = reply.user
    return user


async def expect(code: grpc.StatusCode, call: Awaitable[object]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    assert raised.value.code() == code, raised.value.details()
    return raised.value


async def test_register_creates_a_customer_with_a_lower_case_email(stub: UserServiceStub) -> None:
    email = new_email()
    user = await register(stub, email)
    assert uuid.UUID(user.user_id)
    assert (user.email, user.name, user.role) == (email.lower(), "Ada", pb.ROLE_CUSTOMER)
    age = datetime.now(UTC) - user.created_at.ToDatetime(UTC)
    assert timedelta(0) <= age < timedelta(seconds=30)


async def test_an_email_registers_once_whatever_its_case(stub: UserServiceStub) -> None:
    email = new_email()
    await register(stub, email)
    error = await expect(grpc.StatusCode.ALREADY_EXISTS, register(stub, email.upper()))
    assert email.lower() in (error.details() or "")


async def test_invalid_registrations_name_each_field(stub: UserServiceStub) -> None:
    error = await expect(
        grpc.StatusCode.INVALID_ARGUMENT,
        stub.Register(pb.RegisterRequest(email="not an email", password="short", name="")),
    )
    assert set(field_violations(error)) == {"email", "password", "name"}


async def test_login_returns_a_token_the_gateway_accepts(
    user_service: RunningService, stub: UserServiceStub
) -> None:
    email = new_email()
    user = await register(stub, email)
    reply = await stub.Login(pb.LoginRequest(email=email.upper(), password=PASSWORD))
    assert reply.token_type == "Bearer"
    assert reply.user == user
    claims = tokens.verify_token(jwks(user_service), reply.access_token)
    assert (claims["sub"], claims["role"]) == (user.user_id, "customer")
    assert claims["exp"] - claims["iat"] == tokens.DEFAULT_TTL_SECONDS
    assert reply.expires_at.seconds == claims["exp"]


async def test_unknown_email_and_wrong_password_fail_alike(stub: UserServiceStub) -> None:
    email = new_email()
    await register(stub, email)
    wrong = await expect(
        grpc.StatusCode.UNAUTHENTICATED,
        stub.Login(pb.LoginRequest(email=email, password=PASSWORD + "!")),
    )
    unknown = await expect(
        grpc.StatusCode.UNAUTHENTICATED,
        stub.Login(pb.LoginRequest(email=new_email(), password=PASSWORD)),
    )
    assert wrong.details() == unknown.details()


async def test_invalid_logins_name_each_field(stub: UserServiceStub) -> None:
    error = await expect(
        grpc.StatusCode.INVALID_ARGUMENT, stub.Login(pb.LoginRequest(email="nope", password=""))
    )
    assert set(field_violations(error)) == {"email", "password"}


async def test_the_token_lifetime_follows_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(tokens.TTL_ENV, "60")
    async with running(SPEC, tmp_path) as service:
        stub = UserServiceStub(service.channel)
        email = new_email()
        await register(stub, email)
        reply = await stub.Login(pb.LoginRequest(email=email, password=PASSWORD))
        claims = tokens.verify_token(jwks(service), reply.access_token)
    assert claims["exp"] - claims["iat"] == 60


async def test_a_bad_token_lifetime_stops_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(tokens.TTL_ENV, "soon")
    with pytest.raises(ValueError, match=tokens.TTL_ENV):
        async with running(SPEC, tmp_path):
            pass


async def test_a_customer_reads_only_themself(stub: UserServiceStub) -> None:
    me, other = await register(stub), await register(stub)
    reply = await stub.GetUser(pb.GetUserRequest(user_id=me.user_id), metadata=as_user(me.user_id))
    assert reply.user == me
    upper = pb.GetUserRequest(user_id=me.user_id.upper())
    assert (await stub.GetUser(upper, metadata=as_user(me.user_id))).user == me
    mine_error = await expect(
        grpc.StatusCode.NOT_FOUND,
        stub.GetUser(pb.GetUserRequest(user_id=other.user_id), metadata=as_user(me.user_id)),
    )
    missing = str(uuid.uuid4())
    unknown_error = await expect(
        grpc.StatusCode.NOT_FOUND,
        stub.GetUser(pb.GetUserRequest(user_id=missing), metadata=as_user(me.user_id)),
    )
    # Another user's id and no user at all look the same from outside.
    assert (mine_error.details() or "").replace(other.user_id, missing) == unknown_error.details()


@pytest.mark.parametrize("metadata", [ADMIN, SERVICE], ids=["admin", "service"])
async def test_admins_and_services_read_anyone(
    stub: UserServiceStub, metadata: tuple[tuple[str, str], ...]
) -> None:
    user = await register(stub)
    reply = await stub.GetUser(pb.GetUserRequest(user_id=user.user_id), metadata=metadata)
    assert reply.user == user
    await expect(
        grpc.StatusCode.NOT_FOUND,
        stub.GetUser(pb.GetUserRequest(user_id=str(uuid.uuid4())), metadata=metadata),
    )


async def test_get_user_needs_a_caller_and_a_uuid(stub: UserServiceStub) -> None:
    user = await register(stub)
    await expect(
        grpc.StatusCode.UNAUTHENTICATED, stub.GetUser(pb.GetUserRequest(user_id=user.user_id))
    )
    error = await expect(
        grpc.StatusCode.INVALID_ARGUMENT,
        stub.GetUser(pb.GetUserRequest(user_id="not-a-uuid"), metadata=ADMIN),
    )
    assert set(field_violations(error)) == {"user_id"}


async def test_keys_exist_before_the_first_login(user_service: RunningService) -> None:
    keys = tokens.keys_dir(user_service.config.var_dir)
    assert stat.S_IMODE((keys / tokens.PRIVATE_KEY_FILE).stat().st_mode) == 0o600
    (jwk,) = json.loads((keys / tokens.JWKS_FILE).read_text())["keys"]
    assert (jwk["kty"], jwk["crv"], jwk["alg"], jwk["use"]) == ("EC", "P-256", "ES256", "sig")


async def test_users_and_the_signing_key_survive_a_restart(tmp_path: Path) -> None:
    email = new_email()
    async with running(SPEC, tmp_path) as first:
        stub = UserServiceStub(first.channel)
        user = await register(stub, email)
        old = await stub.Login(pb.LoginRequest(email=email, password=PASSWORD))
        published = jwks(first).read_text()
    async with running(SPEC, tmp_path) as second:
        stub = UserServiceStub(second.channel)
        assert jwks(second).read_text() == published
        assert tokens.verify_token(jwks(second), old.access_token)["sub"] == user.user_id
        new = await stub.Login(pb.LoginRequest(email=email, password=PASSWORD))
        reply = await stub.GetUser(pb.GetUserRequest(user_id=user.user_id), metadata=ADMIN)
        await expect(grpc.StatusCode.ALREADY_EXISTS, register(stub, email))
    assert reply.user == user
    old_kid = jwt.get_unverified_header(old.access_token)["kid"]
    assert jwt.get_unverified_header(new.access_token)["kid"] == old_kid
