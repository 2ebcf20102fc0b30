"""The interceptor's own rule beside protovalidate's: no NUL in any string field."""

from __future__ import annotations

import uuid

import pytest
from shop.order.v1 import order_pb2 as pb

from shopmesh.rpc import bad_request, noting_nul, nul_fields

pytestmark = pytest.mark.unit


def test_nul_characters_are_found_at_any_depth_and_named_by_path() -> None:
    request = pb.PlaceOrderRequest(
        idempotency_key="key\x00",
        lines=[pb.OrderLineInput(product_id="sku-mug"), pb.OrderLineInput(product_id="s\x00")],
    )
    assert list(nul_fields(request)) == ["idempotency_key", "lines[1].product_id"]
    assert list(nul_fields(pb.PlaceOrderRequest(idempotency_key="key"))) == []


def test_a_nul_alone_makes_a_request_invalid() -> None:
    valid = pb.CancelOrderRequest(order_id=str(uuid.uuid4()), reason="changed my mind")
    assert bad_request(valid) is None
    status = bad_request(pb.CancelOrderRequest(order_id=valid.order_id, reason="no\x00"))
    assert status is not None
    assert status.message == "invalid reason"


def test_only_wire_bytes_with_a_zero_byte_need_the_nul_walk() -> None:
    deserialize = noting_nul(pb.PlaceOrderRequest.FromString)
    clean = pb.PlaceOrderRequest(
        idempotency_key="key-000001", lines=[pb.OrderLineInput(product_id="sku-mug", quantity=1)]
    )
    assert deserialize(clean.SerializeToString()) == (clean, False)
    # An empty line is a zero-length message on the wire: a 0x00 byte, but no NUL.
    empty_line = pb.PlaceOrderRequest(idempotency_key="key-000001", lines=[pb.OrderLineInput()])
    message, may_hold_nul = deserialize(empty_line.SerializeToString())
    assert may_hold_nul
    assert list(nul_fields(message)) == []
    with_nul = pb.PlaceOrderRequest(idempotency_key="key\x00")
    assert deserialize(with_nul.SerializeToString())[1]
    status = bad_request(with_nul, may_hold_nul=True)
    assert status is not None
    assert "idempotency_key" in status.message
