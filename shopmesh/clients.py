"""Calls from one service to another: deadlines, identity and error mapping.

A dependency gets the caller's remaining deadline or its own timeout, whichever is
shorter, so a slow dependency can never hold a request past the deadline its client
chose. Failures become domain errors the caller's API maps back to gRPC codes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from shopmesh import telemetry
from shopmesh.errors import DeadlineExceeded, NotFound, Unavailable
from shopmesh.identity import service_metadata

Response = TypeVar("Response")


def deadline(context: grpc.aio.ServicerContext[Any, Any] | None, timeout: float) -> float:
    """Seconds to give a dependency: min(caller's remaining deadline, `timeout`)."""
    remaining = context.time_remaining() if context is not None else None
    return timeout if remaining is None else max(0.0, min(timeout, remaining))


async def call(
    dependency: str,
    method: Callable[..., Awaitable[Response]],
    request: Any,
    *,
    instance: str,
    context: grpc.aio.ServicerContext[Any, Any] | None,
    timeout: float,
) -> Response:
    """Call `method` of `dependency`; map transport failures to domain errors."""
    try:
        return await method(
            request, timeout=deadline(context, timeout), metadata=service_metadata(instance)
        )
    except grpc.aio.AioRpcError as error:
        code = error.code()
        if code == grpc.StatusCode.NOT_FOUND:
            raise NotFound(error.details() or f"not found by {dependency}") from error
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            raise DeadlineExceeded(f"{dependency} did not answer in time") from error
        raise Unavailable(f"{dependency} is unavailable ({code.name})") from error


def channel(target: str) -> grpc.aio.Channel:
    """A channel to a dependency (through this instance's sidecar egress in the mesh);
    each call on it gets a client span and sends its trace context."""
    return grpc.aio.insecure_channel(target, interceptors=telemetry.client_interceptors())
