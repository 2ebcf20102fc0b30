"""Whatever arrives, order answers with a clear code and keeps serving."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import grpc
import pytest
from google.protobuf.message import Message
from shop.order.v1 import order_pb2 as pb

from services.inventory.main import SPEC as INVENTORY_SPEC
from services.order.main import SPEC
from tests.support.fuzz import assert_clear_codes, call_unary, messages
from tests.support.inprocess import as_user, running_in_thread

pytestmark = pytest.mark.integration

SERVICE = "/shop.order.v1.OrderService"
RPCS: list[tuple[str, type[Message], type[Message]]] = [
    ("PlaceOrder", pb.PlaceOrderRequest, pb.PlaceOrderResponse),
    ("GetOrder", pb.GetOrderRequest, pb.GetOrderResponse),
    ("ListOrders", pb.ListOrdersRequest, pb.ListOrdersResponse),
    ("CancelOrder", pb.CancelOrderRequest, pb.CancelOrderResponse),
]
STRANGER = as_user(str(uuid.uuid4()))  # a user id that never registered: may order
NOT_A_UUID = as_user("payment-1", "service")  # not a user id: FAILED_PRECONDITION
ODD_ROLE = as_user(str(uuid.uuid4()), "root")


@pytest.fixture(scope="module")
def mesh(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[grpc.Channel, tuple[tuple[str, str], ...]]]:
    """order's channel, with inventory behind it (order calls no other service); and a
    customer as the gateway names one after verifying their token."""
    with (
        running_in_thread(INVENTORY_SPEC, tmp_path_factory.mktemp("inventory")) as inventory,
        running_in_thread(
            SPEC, tmp_path_factory.mktemp("order"), {"inventory": inventory}
        ) as address,
        grpc.insecure_channel(address) as channel,
    ):
        yield channel, as_user(str(uuid.uuid4()))


@pytest.mark.parametrize(("rpc", "request_cls", "response_cls"), RPCS)
def test_arbitrary_requests_get_clear_codes(
    mesh: tuple[grpc.Channel, tuple[tuple[str, str], ...]],
    rpc: str,
    request_cls: type[Message],
    response_cls: type[Message],
) -> None:
    channel, customer = mesh
    method = f"{SERVICE}/{rpc}"

    identities = [(), customer, STRANGER, NOT_A_UUID, ODD_ROLE]
    assert_clear_codes(channel, method, messages(request_cls), response_cls, identities)
    # Still serving after all that.
    place = pb.PlaceOrderRequest(
        idempotency_key=f"key-{uuid.uuid4()}",
        lines=[pb.OrderLineInput(product_id="sku-mug", quantity=1)],
    )
    assert (
        call_unary(channel, f"{SERVICE}/PlaceOrder", place, pb.PlaceOrderResponse, customer)
        == grpc.StatusCode.OK
    )


INVALID: list[tuple[str, Message, type[Message]]] = [
    ("PlaceOrder", pb.PlaceOrderRequest(), pb.PlaceOrderResponse),
    (
        "PlaceOrder",
        pb.PlaceOrderRequest(
            idempotency_key="key with spaces",
            lines=[pb.OrderLineInput(product_id="sku-mug", quantity=1)],
        ),
        pb.PlaceOrderResponse,
    ),
    (
        "PlaceOrder",
        pb.PlaceOrderRequest(
            idempotency_key="key-000001",
            lines=[pb.OrderLineInput(product_id=f"sku-{n}", quantity=1) for n in range(51)],
        ),
        pb.PlaceOrderResponse,
    ),
    ("GetOrder", pb.GetOrderRequest(), pb.GetOrderResponse),
    ("GetOrder", pb.GetOrderRequest(order_id="x" * 5000), pb.GetOrderResponse),
    ("ListOrders", pb.ListOrdersRequest(page_size=-1), pb.ListOrdersResponse),
    ("ListOrders", pb.ListOrdersRequest(page_token="t" * 257), pb.ListOrdersResponse),
    ("CancelOrder", pb.CancelOrderRequest(), pb.CancelOrderResponse),
    # A NUL is refused at the edge: PostgreSQL's text types cannot store one.
    (
        "CancelOrder",
        pb.CancelOrderRequest(order_id=str(uuid.uuid4()), reason="no\x00thanks"),
        pb.CancelOrderResponse,
    ),
]


@pytest.mark.parametrize(("rpc", "request_message", "response_cls"), INVALID)
def test_invalid_requests_are_invalid_argument(
    mesh: tuple[grpc.Channel, tuple[tuple[str, str], ...]],
    rpc: str,
    request_message: Message,
    response_cls: type[Message],
) -> None:
    channel, customer = mesh
    code = call_unary(channel, f"{SERVICE}/{rpc}", request_message, response_cls, customer)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
