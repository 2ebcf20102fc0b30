"""Arbitrary requests for any protobuf message, for the bad-input property tests.

Builds a hypothesis strategy from a message descriptor: empty, huge and odd strings,
the whole integer range, unknown enum numbers, long repeated fields and nested messages.
Valid requests turn up too, which is the point: whatever arrives, a service must answer
with a clear status code, never INTERNAL or UNKNOWN.
"""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

_INT32 = st.integers(-(2**31), 2**31 - 1)
_INT64 = st.integers(-(2**63), 2**63 - 1)
_UINT = st.integers(0, 2**32 - 1)

_STRING = st.one_of(
    st.just(""),
    st.text(max_size=40),
    st.text(max_size=300).map(lambda s: s * 40),  # up to kilobytes
    st.uuids().map(str),
    st.from_regex(r"\Asku-[a-z]{1,8}\Z"),
    st.emails(),
)

_SCALARS: dict[int, st.SearchStrategy[Any]] = {
    FieldDescriptor.TYPE_STRING: _STRING,
    FieldDescriptor.TYPE_BYTES: st.binary(max_size=64),
    FieldDescriptor.TYPE_BOOL: st.booleans(),
    FieldDescriptor.TYPE_INT32: _INT32,
    FieldDescriptor.TYPE_SINT32: _INT32,
    FieldDescriptor.TYPE_SFIXED32: _INT32,
    FieldDescriptor.TYPE_INT64: _INT64,
    FieldDescriptor.TYPE_SINT64: _INT64,
    FieldDescriptor.TYPE_SFIXED64: _INT64,
    FieldDescriptor.TYPE_UINT32: _UINT,
    FieldDescriptor.TYPE_FIXED32: _UINT,
    FieldDescriptor.TYPE_UINT64: st.integers(0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: st.integers(0, 2**64 - 1),
    FieldDescriptor.TYPE_DOUBLE: st.floats(allow_nan=False),
    FieldDescriptor.TYPE_FLOAT: st.floats(allow_nan=False, width=32),
    # Any number, known to the enum or not: proto3 enums are open.
    FieldDescriptor.TYPE_ENUM: st.integers(-5, 50),
}


def _field(field: Any, cls: type[Message], depth: int) -> st.SearchStrategy[Any]:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        single = messages(_message_class(cls, field), depth + 1)
    else:
        single = _SCALARS[field.type]
    if _is_repeated(field):
        return st.one_of(
            st.lists(single, max_size=5),
            # thousands of elements, all alike, to probe size limits cheaply
            single.map(lambda value: [value] * 2000),
        )
    return single


def _is_repeated(field: Any) -> bool:
    return bool(field.is_repeated)


def _message_class(cls: type[Message], field: FieldDescriptor) -> type[Message]:
    value = getattr(cls(), field.name)
    element: Message = value.add() if _is_repeated(field) else value
    return type(element)


def messages(cls: type[Message], depth: int = 0) -> st.SearchStrategy[Message]:
    """Arbitrary instances of `cls` (nested messages to a small depth)."""
    descriptor = cls.DESCRIPTOR
    if depth > 2:
        return st.just(cls())
    fields = {f.name: _field(f, cls, depth) for f in descriptor.fields}
    return st.fixed_dictionaries({}, optional=fields).map(lambda values: _build(cls, values))


def _build(cls: type[Message], values: dict[str, Any]) -> Message:
    message = cls()
    for name, value in values.items():
        field = message.DESCRIPTOR.fields_by_name[name]
        if _is_repeated(field):
            container = getattr(message, name)
            if field.type == FieldDescriptor.TYPE_MESSAGE:
                for element in value:
                    container.add().CopyFrom(element)
            else:
                container.extend(value)
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            getattr(message, name).CopyFrom(value)
        else:
            setattr(message, name, value)
    return message


def call_unary(
    channel: grpc.Channel,
    method: str,
    request: Message,
    response_cls: type[Message],
    metadata: tuple[tuple[str, str], ...] = (),
) -> grpc.StatusCode:
    """Send `request` to `method` ("/pkg.Service/Method"); the status code it got."""
    call = channel.unary_unary(
        method,
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=response_cls.FromString,
    )
    try:
        call(request, metadata=metadata, timeout=10)
    except grpc.RpcError as error:
        code: grpc.StatusCode = error.code()
        return code
    return grpc.StatusCode.OK


# Codes that mean "the server broke", never an answer to bad input.
SERVER_FAULTS = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS}


Identity = tuple[tuple[str, str], ...]


def assert_clear_codes(
    channel: grpc.Channel,
    method: str,
    requests: st.SearchStrategy[Message],
    response_cls: type[Message],
    identities: list[Identity],
    examples: int = 60,
) -> None:
    """Send arbitrary `requests` as each of `identities`: none may get a server fault."""

    @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck))
    @given(request=requests, metadata=st.sampled_from(identities))
    def check(request: Message, metadata: Identity) -> None:
        code = call_unary(channel, method, request, response_cls, metadata)
        assert code not in SERVER_FAULTS, f"{method}({request}) -> {code}"

    check()
