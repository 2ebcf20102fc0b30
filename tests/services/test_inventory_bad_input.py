"""Whatever arrives, inventory answers with a clear code and keeps serving."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf.message import Message
from shop.inventory.v1 import inventory_pb2 as pb

from services.inventory.main import SPEC
from tests.support.fuzz import assert_clear_codes, call_unary, messages
from tests.support.inprocess import as_user, running_in_thread

pytestmark = pytest.mark.integration

RPCS: list[tuple[str, type[Message], type[Message]]] = [
    ("ListProducts", pb.ListProductsRequest, pb.ListProductsResponse),
    ("GetProduct", pb.GetProductRequest, pb.GetProductResponse),
    ("AdjustStock", pb.AdjustStockRequest, pb.AdjustStockResponse),
]
ADMIN = as_user("00000000-0000-4000-8000-000000000001", "admin")


@pytest.fixture(scope="module")
def channel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[grpc.Channel]:
    var_dir: Path = tmp_path_factory.mktemp("inventory")
    with running_in_thread(SPEC, var_dir) as address, grpc.insecure_channel(address) as channel:
        yield channel


@pytest.mark.parametrize(("rpc", "request_cls", "response_cls"), RPCS)
def test_arbitrary_requests_get_clear_codes(
    channel: grpc.Channel, rpc: str, request_cls: type[Message], response_cls: type[Message]
) -> None:
    method = f"/shop.inventory.v1.InventoryService/{rpc}"

    assert_clear_codes(channel, method, messages(request_cls), response_cls, [(), ADMIN])
    # Still serving after all that.
    assert (
        call_unary(
            channel,
            method.rsplit("/", 1)[0] + "/ListProducts",
            pb.ListProductsRequest(),
            pb.ListProductsResponse,
        )
        == grpc.StatusCode.OK
    )


INVALID: list[tuple[str, Message, type[Message]]] = [
    ("GetProduct", pb.GetProductRequest(), pb.GetProductResponse),
    ("GetProduct", pb.GetProductRequest(product_id="x" * 5000), pb.GetProductResponse),
    ("ListProducts", pb.ListProductsRequest(page_size=-1), pb.ListProductsResponse),
    ("ListProducts", pb.ListProductsRequest(page_size=101), pb.ListProductsResponse),
]


@pytest.mark.parametrize(("rpc", "request_message", "response_cls"), INVALID)
def test_invalid_requests_are_invalid_argument(
    channel: grpc.Channel, rpc: str, request_message: Message, response_cls: type[Message]
) -> None:
    method = f"/shop.inventory.v1.InventoryService/{rpc}"
    code = call_unary(channel, method, request_message, response_cls, ADMIN)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
