"""Order's sync dependencies, over gRPC: user (does the customer exist?) and inventory
(what does a product cost?). Failures arrive as domain errors (shopmesh.clients.call)."""

from __future__ import annotations

import re

from shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from shop.user.v1 import user_pb2, user_pb2_grpc

from services.order.domain import CatalogueEntry
from shopmesh.clients import call
from shopmesh.errors import FailedPrecondition, NotFound
from shopmesh.rpc import Context
from shopmesh.server import Runtime

# What user.GetUser accepts; any other caller id cannot be a user (and would be refused
# as INVALID_ARGUMENT, which clients.call reports as UNAVAILABLE).
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


class GrpcUpstreams:
    """The dependencies as one request sees them: within its deadline, each call capped
    at `timeout` seconds."""

    def __init__(self, runtime: Runtime, context: Context, timeout: float) -> None:
        self.runtime = runtime
        self.context = context
        self.timeout = timeout

    async def require_user(self, user_id: str) -> None:
        """FailedPrecondition unless `user_id` is a registered user."""
        if not _UUID.match(user_id):
            raise FailedPrecondition(f"no user {user_id}")
        stub = user_pb2_grpc.UserServiceStub(self.runtime.channels["user"])
        try:
            await call(
                "user",
                stub.GetUser,
                user_pb2.GetUserRequest(user_id=user_id),
                instance=self.runtime.config.instance,
                context=self.context,
                timeout=self.timeout,
            )
        except NotFound:
            raise FailedPrecondition(f"no user {user_id}") from None

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
