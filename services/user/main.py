"""Wires the user service: its API, migrations and the token signing key."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
from shop.user.v1 import user_pb2, user_pb2_grpc

from services.user import tokens
from services.user.api import UserApi
from services.user.storage import UnitOfWork
from shopmesh.server import Runtime, ServiceSpec, run


def register(server: grpc.aio.Server, runtime: Runtime) -> None:
    # Read here so a bad $SHOPMESH_TOKEN_TTL stops the instance at start, not at a login.
    ttl = tokens.ttl_from_env()
    user_pb2_grpc.add_UserServiceServicer_to_server(UserApi(runtime, ttl), server)


async def on_start(runtime: Runtime) -> None:
    # Before SERVING: the gateway reads jwks.json only when it starts.
    await asyncio.to_thread(tokens.ensure_signing_key, tokens.keys_dir(runtime.config.var_dir))


SPEC = ServiceSpec(
    name="user",
    grpc_services=[user_pb2.DESCRIPTOR.services_by_name["UserService"].full_name],
    migrations=Path(__file__).parent / "storage" / "migrations",
    register=register,
    on_start=on_start,
    unit_of_work=UnitOfWork,
)


def main() -> None:
    run(SPEC)
