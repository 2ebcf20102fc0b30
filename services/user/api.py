"""User's gRPC API: decode, call a handler, encode. No rules here."""

from __future__ import annotations

import functools
from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp
from shop.user.v1 import user_pb2, user_pb2_grpc

from services.user import handlers, tokens
from services.user.domain import Role, User
from services.user.storage import UnitOfWork
from shopmesh.identity import caller_from_metadata
from shopmesh.rpc import Context
from shopmesh.server import Runtime

_ROLES = {Role.CUSTOMER: user_pb2.ROLE_CUSTOMER, Role.ADMIN: user_pb2.ROLE_ADMIN}


def timestamp_pb(value: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def user_pb(user: User) -> user_pb2.User:
    return user_pb2.User(
        user_id=user.user_id,
        email=user.email,
        name=user.name,
        role=_ROLES[user.role],
        created_at=timestamp_pb(user.created_at),
    )


class UserApi(user_pb2_grpc.UserServiceServicer):
    def __init__(self, runtime: Runtime, token_ttl: int) -> None:
        self.runtime = runtime
        self.token_ttl = token_ttl

    def uow(self) -> UnitOfWork:
        return UnitOfWork.for_runtime(self.runtime)

    @functools.cached_property
    def signing_key(self) -> tokens.SigningKey:
        # on_start made the key before this instance said SERVING: this only reads it.
        return tokens.ensure_signing_key(tokens.keys_dir(self.runtime.config.var_dir))

    async def Register(
        self, request: user_pb2.RegisterRequest, context: Context
    ) -> user_pb2.RegisterResponse:
        user = await handlers.register(self.uow(), request.email, request.password, request.name)
        return user_pb2.RegisterResponse(user=user_pb(user))

    async def Login(
        self, request: user_pb2.LoginRequest, context: Context
    ) -> user_pb2.LoginResponse:
        session = await handlers.login(
            self.runtime.db.reader,
            self.signing_key,
            self.token_ttl,
            request.email,
            request.password,
        )
        return user_pb2.LoginResponse(
            access_token=session.access_token,
            token_type="Bearer",
            expires_at=timestamp_pb(session.expires_at),
            user=user_pb(session.user),
        )

    async def GetUser(
        self, request: user_pb2.GetUserRequest, context: Context
    ) -> user_pb2.GetUserResponse:
        caller = caller_from_metadata(context.invocation_metadata())
        user = await handlers.get_user(self.runtime.db.reader, caller, request.user_id)
        return user_pb2.GetUserResponse(user=user_pb(user))
