"""Order's one sync dependency, over gRPC: inventory (what does a product cost?). Failures
arrive as domain errors (shopmesh.clients.call).

Order does not ask user whether the caller exists: the gateway verified the token the
user service issued, and its subject is the user id (docs/architecture.md, "Who talks
to whom")."""

from __future__ import annotations

from shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc

from services.order.domain import CatalogueEntry
from shopmesh.clients import call
from shopmesh.errors import NotFound
from shopmesh.rpc import Context
from shopmesh.server import Runtime


class GrpcUpstreams:
    """The dependencies as one request sees them: within its deadline, each call capped
    at `timeout` seconds."""

    def __init__(self, runtime: Runtime, context: Context, timeout: float) -> None:
        self.runtime = runtime
        self.context = context
        self.timeout = timeout

    async def product(self, product_id: str) -> CatalogueEntry | None:
        """The product's current price, None for a product inventory does not know."""
        stub = inventory_pb2_grpc.InventoryServiceStub(self.runtime.channels["inventory"])
        try:
            reply: inventory_pb2.GetProductResponse = await call(
                "inventory",
                stub.GetProduct,
                inventory_pb2.GetProductRequest(product_id=product_id),
                instance=self.runtime.config.instance,
                context=self.context,
                timeout=self.timeout,
            )
        except NotFound:
            return None
        product = reply.product
        return CatalogueEntry(
            product_id=product_id,
            name=product.name,
            price_minor=product.price.amount_minor,
            currency=product.price.currency,
        )
