"""Where notification learns a user's email and name: the user service's GetUser."""

from __future__ import annotations

from typing import Protocol

import grpc
from shop.user.v1 import user_pb2, user_pb2_grpc

from shopmesh import clients

# Seconds a lookup may take; events have no caller deadline to inherit.
TIMEOUT = 2.0


class UserDirectory(Protocol):
    async def email_of(self, user_id: str) -> tuple[str, str]:
        """(email, name) of the user; NotFound if unknown, Unavailable if unreachable."""
        ...


class GrpcUserDirectory:
    """A UserDirectory backed by `shop.user.v1.UserService/GetUser`."""

    def __init__(self, channel: grpc.aio.Channel, instance: str) -> None:
        self.stub = user_pb2_grpc.UserServiceStub(channel)
        self.instance = instance

    async def email_of(self, user_id: str) -> tuple[str, str]:
        reply: user_pb2.GetUserResponse = await clients.call(
            "user",
            self.stub.GetUser,
            user_pb2.GetUserRequest(user_id=user_id),
            instance=self.instance,
            context=None,
            timeout=TIMEOUT,
        )
        return reply.user.email, reply.user.name
