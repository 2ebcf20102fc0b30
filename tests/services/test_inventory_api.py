"""Inventory's gRPC API over a real channel, with a real database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from shop.inventory.v1 import inventory_pb2 as pb
from shop.inventory.v1.inventory_pb2_grpc import InventoryServiceStub

from services.inventory.domain import CATALOGUE
from services.inventory.main import SPEC
from tests.support.errors import field_violations
from tests.support.inprocess import RunningService, as_user, running

pytestmark = pytest.mark.integration

ADMIN = as_user("00000000-0000-4000-8000-000000000001", "admin")
CUSTOMER = as_user("00000000-0000-4000-8000-000000000002")


@pytest.fixture
async def inventory(tmp_path: Path) -> AsyncIterator[RunningService]:
    async with running(SPEC, tmp_path) as service:
        yield service


@pytest.fixture
def stub(inventory: RunningService) -> InventoryServiceStub:
    return InventoryServiceStub(inventory.channel)


async def test_list_products_pages_through_the_seeded_catalogue(stub: InventoryServiceStub) -> None:
    seen: list[str] = []
    token = ""
    while True:
        page = await stub.ListProducts(pb.ListProductsRequest(page_size=4, page_token=token))
        assert len(page.products) <= 4
        seen += [p.product_id for p in page.products]
        token = page.next_page_token
        if not token:
            break
    assert seen == sorted(p.product_id for p in CATALOGUE)


async def test_get_product_and_not_found(stub: InventoryServiceStub) -> None:
    reply = await stub.GetProduct(pb.GetProductRequest(product_id="sku-mug"))
    assert reply.product.price.currency == "EUR"
    assert reply.product.price.amount_minor > 0
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.GetProduct(pb.GetProductRequest(product_id="sku-nothing"))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


async def test_adjust_stock_needs_an_admin(stub: InventoryServiceStub) -> None:
    request = pb.AdjustStockRequest(product_id="sku-mug", delta=5)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.AdjustStock(request)
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.AdjustStock(request, metadata=CUSTOMER)
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    before = (await stub.GetProduct(pb.GetProductRequest(product_id="sku-mug"))).product
    reply = await stub.AdjustStock(request, metadata=ADMIN)
    assert reply.product.available == before.available + 5


async def test_stock_never_goes_negative(stub: InventoryServiceStub) -> None:
    product = (await stub.GetProduct(pb.GetProductRequest(product_id="sku-grinder"))).product
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.AdjustStock(
            pb.AdjustStockRequest(product_id="sku-grinder", delta=-(product.available + 1)),
            metadata=ADMIN,
        )
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    after = (await stub.GetProduct(pb.GetProductRequest(product_id="sku-grinder"))).product
    assert after.available == product.available


async def test_invalid_requests_name_each_field(stub: InventoryServiceStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.AdjustStock(pb.AdjustStockRequest(product_id="NO SUCH", delta=0), metadata=ADMIN)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(raised.value)) == {"product_id", "delta"}


async def test_a_bad_page_token_is_invalid_argument(stub: InventoryServiceStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ListProducts(pb.ListProductsRequest(page_token="not-a-token"))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_seeding_is_idempotent_across_restarts(tmp_path: Path) -> None:
    async with running(SPEC, tmp_path) as first:
        stub = InventoryServiceStub(first.channel)
        await stub.AdjustStock(
            pb.AdjustStockRequest(product_id="sku-mug", delta=-7), metadata=ADMIN
        )
        before = await stub.ListProducts(pb.ListProductsRequest(page_size=100))
    async with running(SPEC, tmp_path) as second:
        after = await InventoryServiceStub(second.channel).ListProducts(
            pb.ListProductsRequest(page_size=100)
        )
    assert after == before
