"""Inventory's use cases: each a short function of its input and a unit of work."""

from __future__ import annotations

from services.inventory.domain import CATALOGUE, Product
from services.inventory.storage import UnitOfWork
from shopmesh.errors import NotFound
from shopmesh.identity import Caller


async def adjust_stock(uow: UnitOfWork, caller: Caller, product_id: str, delta: int) -> Product:
    caller.require_admin()
    async with uow:
        product = await uow.products.get(product_id)
        if product is None:
            raise NotFound(f"no product {product_id}")
        product.adjust(delta)
        await uow.products.save(product)
        await uow.commit()
    return product


async def seed_catalogue(uow: UnitOfWork) -> int:
    """Insert the starting catalogue into an empty database; returns products added."""
    async with uow:
        if await uow.products.count():
            return 0
        for product in CATALOGUE:
            await uow.products.add(Product(**vars(product)))
        await uow.commit()
    return len(CATALOGUE)
