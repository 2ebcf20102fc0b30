"""Whatever arrives, payment answers with a clear code and keeps serving."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf.message import Message
from shop.payment.v1 import payment_pb2 as pb

from services.payment.main import SPEC
from tests.support.fuzz import assert_clear_codes, call_unary, messages
from tests.support.inprocess import as_user, running_in_thread

pytestmark = pytest.mark.integration

SERVICE = "/shop.payment.v1.PaymentService"
RPCS: list[tuple[str, type[Message], type[Message]]] = [
    ("GetPayment", pb.GetPaymentRequest, pb.GetPaymentResponse),
    ("ListPayments", pb.ListPaymentsRequest, pb.ListPaymentsResponse),
]
CUSTOMER = as_user("00000000-0000-4000-8000-000000000002")
IDENTITIES = [(), CUSTOMER, as_user("00000000-0000-4000-8000-000000000001", "admin")]


@pytest.fixture(scope="module")
def channel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[grpc.Channel]:
    var_dir: Path = tmp_path_factory.mktemp("payment")
    with running_in_thread(SPEC, var_dir) as address, grpc.insecure_channel(address) as channel:
        yield channel


@pytest.mark.parametrize(("rpc", "request_cls", "response_cls"), RPCS)
def test_arbitrary_requests_get_clear_codes(
    channel: grpc.Channel, rpc: str, request_cls: type[Message], response_cls: type[Message]
) -> None:
    method = f"{SERVICE}/{rpc}"
    assert_clear_codes(channel, method, messages(request_cls), response_cls, IDENTITIES)
    # Still serving after all that.
    still = pb.ListPaymentsRequest(order_id=str(uuid.uuid4()))
    code = call_unary(channel, f"{SERVICE}/ListPayments", still, pb.ListPaymentsResponse, CUSTOMER)
    assert code == grpc.StatusCode.OK


INVALID: list[tuple[str, Message, type[Message]]] = [
    ("GetPayment", pb.GetPaymentRequest(), pb.GetPaymentResponse),
    ("GetPayment", pb.GetPaymentRequest(payment_id="x" * 5000), pb.GetPaymentResponse),
    ("GetPayment", pb.GetPaymentRequest(payment_id="' OR 1=1 --"), pb.GetPaymentResponse),
    ("ListPayments", pb.ListPaymentsRequest(), pb.ListPaymentsResponse),
    ("ListPayments", pb.ListPaymentsRequest(order_id="order-1"), pb.ListPaymentsResponse),
]


@pytest.mark.parametrize(("rpc", "request_message", "response_cls"), INVALID)
def test_invalid_requests_are_invalid_argument(
    channel: grpc.Channel, rpc: str, request_message: Message, response_cls: type[Message]
) -> None:
    code = call_unary(channel, f"{SERVICE}/{rpc}", request_message, response_cls, CUSTOMER)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
