"""Loads and saves inventory's aggregates; the only code that writes its tables."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import sqlalchemy as sa

from services.inventory.domain import Item, Product, Reservation, ReservationStatus
from services.inventory.storage.tables import products, reservation_items, reservations
from shopmesh import uow
from shopmesh.db import Connection
from shopmesh.paging import page_size


def _product(row: sa.Row[tuple[object, ...]]) -> Product:
    return Product(**row._asdict())


# Statements built once: building a Core statement and its cache key on every call cost
# more CPU than running it (bench/profile.py, docs/benchmarks.md).
_LOCK_PRODUCTS = (
    sa.select(products)
    .where(products.c.product_id.in_(sa.bindparam("ids", expanding=True)))
    .order_by(products.c.product_id)
    .with_for_update()
)
_GET_PRODUCT = sa.select(products).where(products.c.product_id == sa.bindparam("id"))
_INSERT_PRODUCT = sa.insert(products)
_SAVE_PRODUCT = (
    sa.update(products)
    .where(products.c.product_id == sa.bindparam("id"))
    .values(available=sa.bindparam("available"), reserved=sa.bindparam("reserved"))
)
_COUNT_PRODUCTS = sa.select(sa.func.count()).select_from(products)
_LOCK_RESERVATION = (
    sa.select(reservations.c.status)
    .where(reservations.c.order_id == sa.bindparam("order_id"))
    .with_for_update()
)
_RESERVATION_ITEMS = (
    sa.select(reservation_items.c.product_id, reservation_items.c.quantity)
    .where(reservation_items.c.order_id == sa.bindparam("order_id"))
    .order_by(reservation_items.c.product_id)
)
_INSERT_RESERVATION = sa.insert(reservations)
_INSERT_RESERVATION_ITEM = sa.insert(reservation_items)
_SAVE_RESERVATION = (
    sa.update(reservations)
    .where(reservations.c.order_id == sa.bindparam("id"))
    .values(status=sa.bindparam("status"))
)


class ProductRepository:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    async def get_many(self, product_ids: Iterable[str]) -> dict[str, Product]:
        """The products, locked until the unit of work ends: reservations, releases and
        AdjustStock run concurrently and each writes counts computed from what it read
        (SQLite's writer lock already serializes them). Locked in id order: no deadlock."""
        rows = await self.conn.execute(_LOCK_PRODUCTS, {"ids": sorted(set(product_ids))})
        return {row.product_id: _product(row) for row in rows}

    async def get(self, product_id: str) -> Product | None:
        return (await self.get_many([product_id])).get(product_id)

    async def add(self, product: Product) -> None:
        await self.conn.execute(_INSERT_PRODUCT, vars(product))

    async def save(self, product: Product) -> None:
        await self.conn.execute(
            _SAVE_PRODUCT,
            {
                "id": product.product_id,
                "available": product.available,
                "reserved": product.reserved,
            },
        )

    async def count(self) -> int:
        return (await self.conn.scalar(_COUNT_PRODUCTS)) or 0


class ReservationRepository:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    async def get(self, order_id: str) -> Reservation | None:
        """The order's reservation, locked until the unit of work ends."""
        header = await self.conn.scalar(_LOCK_RESERVATION, {"order_id": order_id})
        if header is None:
            return None
        items = await self.conn.execute(_RESERVATION_ITEMS, {"order_id": order_id})
        return Reservation(
            order_id=order_id,
            items=[Item(row.product_id, row.quantity) for row in items],
            status=ReservationStatus(header),
        )

    async def add(self, reservation: Reservation) -> None:
        await self.conn.execute(
            _INSERT_RESERVATION,
            {
                "order_id": reservation.order_id,
                "status": reservation.status,
                "created_at": uow.now(),
            },
        )
        await self.conn.execute(
            _INSERT_RESERVATION_ITEM,
            [
                {
                    "order_id": reservation.order_id,
                    "product_id": i.product_id,
                    "quantity": i.quantity,
                }
                for i in reservation.items
            ],
        )

    async def save(self, reservation: Reservation) -> None:
        await self.conn.execute(
            _SAVE_RESERVATION, {"id": reservation.order_id, "status": reservation.status}
        )


class UnitOfWork(uow.UnitOfWork):
    products: ProductRepository
    reservations: ReservationRepository

    def open_repositories(self) -> None:
        self.products = ProductRepository(self.conn)
        self.reservations = ReservationRepository(self.conn)


# Queries: reads that need no aggregate and no write transaction.


async def list_products(
    conn: Connection, size: int, after: str | None
) -> tuple[Sequence[Product], str | None]:
    """One page of products in id order and the id to continue after, if any."""
    query = sa.select(products).order_by(products.c.product_id).limit(page_size(size) + 1)
    if after is not None:
        query = query.where(products.c.product_id > after)
    rows = [_product(row) for row in await conn.execute(query)]
    page = rows[: page_size(size)]
    return page, (page[-1].product_id if len(rows) > len(page) else None)


async def get_product(conn: Connection, product_id: str) -> Product | None:
    row = (await conn.execute(_GET_PRODUCT, {"id": product_id})).first()
    return None if row is None else _product(row)
