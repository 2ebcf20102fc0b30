"""One gRPC server interceptor for every service: trace, validate, map errors, measure, log.

Every unary request is checked against its protovalidate rules before the servicer
sees it; a violation answers INVALID_ARGUMENT with a `google.rpc.BadRequest` listing
each field. Domain errors become their gRPC codes; anything unexpected becomes INTERNAL
with a short message, and the traceback goes to the log only. The same wrapper opens
the call's server span (shopmesh.telemetry), records `rpc.server.duration` and writes
the call's log line (`python -m bench.overheads` measures what each costs).

Errors are sent with `context.abort` before any response message, so the status travels
in the response headers (a trailers-only response): Envoy counts a gRPC error for
retries and outlier detection only when it arrives that way.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, NoReturn, TypeAlias

import grpc
import protovalidate
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from opentelemetry import metrics, trace

from shopmesh import errors, telemetry

log = logging.getLogger(__name__)

_CODES: dict[type[errors.DomainError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
}

_validator = protovalidate.Validator()

# What a servicer method receives beside its request.
Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"

UnaryBehavior = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]


def field_path(violation: protovalidate.Violation) -> str:
    """`lines[0].quantity` from a protovalidate field path."""
    parts: list[str] = []
    elements: list[Any] = list(violation.proto.field.elements) if violation.proto.field else []
    for element in elements:
        # protovalidate's own message runtime: the oneof is an object with a `.value`.
        subscript = getattr(element.subscript, "value", None)
        parts.append(element.field_name + ("" if subscript is None else f"[{subscript}]"))
    return ".".join(parts)


def nul_fields(message: Message, prefix: str = "") -> Iterator[str]:
    """Paths of the string fields in `message` that hold a NUL character.

    PostgreSQL's text types refuse NUL, SQLite's keep it: every service refuses it at
    the edge instead, so a name or reason with one gets INVALID_ARGUMENT on any backend,
    never an INTERNAL from the database.
    """
    for field, value in message.ListFields():
        path = prefix + field.name
        values = list(value) if field.is_repeated else [value]
        for index, item in enumerate(values):
            at = f"{path}[{index}]" if field.is_repeated else path
            if field.type == FieldDescriptor.TYPE_MESSAGE:
                yield from nul_fields(item, at + ".")
            elif field.type == FieldDescriptor.TYPE_STRING and "\x00" in item:
                yield at


def bad_request(message: Message, *, may_hold_nul: bool = True) -> status_pb2.Status | None:
    """The INVALID_ARGUMENT status for `message`, or None when it is valid.

    `may_hold_nul=False` skips the walk for NUL characters: the caller knows the
    message's wire bytes hold no 0x00 byte, and UTF-8 encodes U+0000 as just that.
    """
    violations = [
        error_details_pb2.BadRequest.FieldViolation(
            field=field_path(v), description=f"{v.proto.message} [{v.proto.rule_id}]"
        )
        for v in _validator.collect_violations(message)
    ]
    if may_hold_nul:
        violations += [
            error_details_pb2.BadRequest.FieldViolation(
                field=path, description="must not contain NUL characters [shopmesh.no_nul]"
            )
            for path in nul_fields(message)
        ]
    if not violations:
        return None
    details = error_details_pb2.BadRequest(field_violations=violations)
    fields = ", ".join(sorted({fv.field or "(message)" for fv in details.field_violations}))
    status = status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message=f"invalid {fields}")
    status.details.add().Pack(details)
    return status


async def abort_with(
    context: grpc.aio.ServicerContext[Any, Any], status: status_pb2.Status
) -> NoReturn:
    converted = rpc_status.to_status(status)
    await context.abort(converted.code, converted.details, converted.trailing_metadata)
    raise AssertionError("context.abort returned")  # pragma: no cover


def noting_nul(
    deserializer: Callable[[bytes], Any] | None,
) -> Callable[[bytes], tuple[Any, bool]]:
    """`deserializer`, returning the request and whether its wire bytes hold a 0x00.

    Checking the bytes grpc already has costs a memchr; walking every string field of
    the message for a NUL costs about as much as protovalidate itself. Without a 0x00
    byte no string can hold a NUL, so most requests skip the walk.
    """

    def deserialize(data: bytes) -> tuple[Any, bool]:
        return (data if deserializer is None else deserializer(data)), b"\x00" in data

    return deserialize


class ServiceInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Everything a service does around each of its unary calls, in one wrapper.

    The server span (with the caller's W3C context), validation, the mapping of errors
    to codes, the `rpc.server.duration` metric and one log line inside the span. One
    interceptor rather than a stack of them, and its wrapper built once per method:
    every grpc.aio interceptor costs each call a coroutine and a new method handler.
    Health and reflection are not ours to validate or trace; streaming RPCs have no
    rules (and the shop has none).
    """

    def __init__(
        self,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
    ) -> None:
        # Made here, after `telemetry.configure` installed the providers (tests pass theirs).
        self._tracer = telemetry.tracer(tracer_provider)
        self._duration = metrics.get_meter(
            "shopmesh.rpc", meter_provider=meter_provider
        ).create_histogram(
            "rpc.server.duration",
            unit="ms",
            description="Time to answer one RPC, by method and code",
        )
        # method -> (the servicer's handler, our wrapper around it)
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        if handler is None or handler.unary_unary is None or not method.startswith("/shop."):
            return handler
        wrapped = grpc.unary_unary_rpc_method_handler(
            self._wrap(handler.unary_unary, method),
            request_deserializer=noting_nul(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    def _wrap(self, behavior: UnaryBehavior, method: str) -> UnaryBehavior:
        spans = telemetry.ServerSpans(method, self._tracer)
        duration = self._duration
        # The metric's attributes by code, made once each.
        labels: dict[grpc.StatusCode, dict[str, Any]] = {}

        async def handle(
            received: tuple[Any, bool], context: grpc.aio.ServicerContext[Any, Any]
        ) -> Any:
            request, may_hold_nul = received
            started = time.perf_counter()
            span, token = spans.start(context.invocation_metadata())
            try:
                invalid = bad_request(request, may_hold_nul=may_hold_nul)
                if invalid is not None:
                    await abort_with(context, invalid)
                return await behavior(request, context)
            except errors.DomainError as error:
                code = next(c for kind, c in _CODES.items() if isinstance(error, kind))
                await context.abort(code, str(error))
            except grpc.aio.AbortError:
                raise
            except Exception as error:
                log.exception("unexpected error in %s", method)
                span.record_exception(error)
                await context.abort(grpc.StatusCode.INTERNAL, "internal error; see the server log")
            finally:
                code = context.code() or grpc.StatusCode.OK
                elapsed_ms = (time.perf_counter() - started) * 1000
                attributes = labels.get(code)
                if attributes is None:
                    attributes = {"rpc.method": method, "rpc.grpc.status_code": code.value[0]}
                    labels[code] = attributes
                duration.record(elapsed_ms, attributes)
                # One line per call, inside its span: `shopmesh logs --trace` finds it.
                log.info("%s %s %.1fms", method, code.name, elapsed_ms)
                spans.end(span, token, code, context.details())

        return handle
