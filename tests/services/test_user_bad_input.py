"""Whatever arrives, user answers with a clear code and keeps serving."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf.message import Message
from shop.user.v1 import user_pb2 as pb

from services.user.main import SPEC
from tests.support.fuzz import assert_clear_codes, call_unary, messages
from tests.support.inprocess import as_user, running_in_thread

pytestmark = pytest.mark.integration

SERVICE = "/shop.user.v1.UserService"
RPCS: list[tuple[str, type[Message], type[Message]]] = [
    ("Register", pb.RegisterRequest, pb.RegisterResponse),
    ("Login", pb.LoginRequest, pb.LoginResponse),
    ("GetUser", pb.GetUserRequest, pb.GetUserResponse),
]
ADMIN = as_user(str(uuid.uuid4()), "admin")
CUSTOMER = as_user(str(uuid.uuid4()))
ODD_ROLE = as_user(str(uuid.uuid4()), "root")


@pytest.fixture(scope="module")
def channel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[grpc.Channel]:
    var_dir: Path = tmp_path_factory.mktemp("user")
    with running_in_thread(SPEC, var_dir) as address, grpc.insecure_channel(address) as channel:
        yield channel


@pytest.mark.parametrize(("rpc", "request_cls", "response_cls"), RPCS)
def test_arbitrary_requests_get_clear_codes(
    channel: grpc.Channel, rpc: str, request_cls: type[Message], response_cls: type[Message]
) -> None:
    method = f"{SERVICE}/{rpc}"

    identities = [(), ADMIN, CUSTOMER, ODD_ROLE]
    assert_clear_codes(channel, method, messages(request_cls), response_cls, identities)
    # Still serving after all that.
    email = f"after-{uuid.uuid4().hex[:12]}@example.com"
    register = pb.RegisterRequest(email=email, password="password1", name="Ada")
    assert (
        call_unary(channel, f"{SERVICE}/Register", register, pb.RegisterResponse)
        == grpc.StatusCode.OK
    )


INVALID: list[tuple[str, Message, type[Message]]] = [
    ("Register", pb.RegisterRequest(), pb.RegisterResponse),
    (
        "Register",
        pb.RegisterRequest(email="a@example.com", password="p" * 129, name="Ada"),
        pb.RegisterResponse,
    ),
    (
        "Register",
        pb.RegisterRequest(email="a@example.com", password="password1", name="x" * 101),
        pb.RegisterResponse,
    ),
    (
        "Register",
        pb.RegisterRequest(email="x" * 250 + "@a.io", password="password1", name="Ada"),
        pb.RegisterResponse,
    ),
    # A NUL is refused at the edge: PostgreSQL's text types cannot store one.
    (
        "Register",
        pb.RegisterRequest(email="a@example.com", password="password1", name="A\x00da"),
        pb.RegisterResponse,
    ),
    ("Login", pb.LoginRequest(), pb.LoginResponse),
    ("Login", pb.LoginRequest(email="a@example.com", password="p" * 129), pb.LoginResponse),
    ("GetUser", pb.GetUserRequest(), pb.GetUserResponse),
    ("GetUser", pb.GetUserRequest(user_id="x" * 5000), pb.GetUserResponse),
]


@pytest.mark.parametrize(("rpc", "request_message", "response_cls"), INVALID)
def test_invalid_requests_are_invalid_argument(
    channel: grpc.Channel, rpc: str, request_message: Message, response_cls: type[Message]
) -> None:
    code = call_unary(channel, f"{SERVICE}/{rpc}", request_message, response_cls, ADMIN)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
