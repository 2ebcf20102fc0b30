"""Inventory's gRPC API: decode, call a handler or query, encode. No rules here."""

from __future__ import annotations

from shop.common.v1 import common_pb2
from shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc

from services.inventory import handlers
from services.inventory.domain import Product
from services.inventory.storage import UnitOfWork, repository
from shopmesh import paging
from shopmesh.errors import NotFound
from shopmesh.identity import caller_from_metadata
from shopmesh.rpc import Context
from shopmesh.server import Runtime


def product_pb(product: Product) -> inventory_pb2.Product:
    return inventory_pb2.Product(
        product_id=product.product_id,
        name=product.name,
        description=product.description,
        price=common_pb2.Money(amount_minor=product.price_minor, currency=product.currency),
        available=product.available,
        reserved=product.reserved,
    )


class InventoryApi(inventory_pb2_grpc.InventoryServiceServicer):
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def uow(self) -> UnitOfWork:
        return UnitOfWork.for_runtime(self.runtime)

    async def ListProducts(
        self, request: inventory_pb2.ListProductsRequest, context: Context
    ) -> inventory_pb2.ListProductsResponse:
        after = paging.decode(request.page_token, 1)
        async with self.runtime.db.reader.connect() as conn:
            page, last = await repository.list_products(
                conn, request.page_size, after[0] if after else None
            )
        return inventory_pb2.ListProductsResponse(
            products=[product_pb(p) for p in page],
            next_page_token=paging.encode(last) if last else "",
        )

    async def GetProduct(
        self, request: inventory_pb2.GetProductRequest, context: Context
    ) -> inventory_pb2.GetProductResponse:
        async with self.runtime.db.reader.connect() as conn:
            product = await repository.get_product(conn, request.product_id)
        if product is None:
            raise NotFound(f"no product {request.product_id}")
        return inventory_pb2.GetProductResponse(product=product_pb(product))

    async def AdjustStock(
        self, request: inventory_pb2.AdjustStockRequest, context: Context
    ) -> inventory_pb2.AdjustStockResponse:
        caller = caller_from_metadata(context.invocation_metadata())
        product = await handlers.adjust_stock(self.uow(), caller, request.product_id, request.delta)
        return inventory_pb2.AdjustStockResponse(product=product_pb(product))
