"""Inventory's rules: stock never goes negative, and an order is reserved in full or not
at all. Plain Python: no gRPC, no SQL."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from shopmesh.errors import FailedPrecondition


@dataclass
class Product:
    product_id: str
    name: str
    description: str
    price_minor: int
    currency: str
    available: int
    reserved: int = 0

    def adjust(self, delta: int) -> None:
        """Add or remove available units (an operator's correction or a delivery)."""
        if self.available + delta < 0:
            raise FailedPrecondition(
                f"{self.product_id}: cannot remove {-delta} units, only {self.available} available"
            )
        self.available += delta


@dataclass(frozen=True)
class Item:
    product_id: str
    quantity: int


class ReservationStatus(StrEnum):
    RESERVED = "reserved"
    RELEASED = "released"


@dataclass
class Reservation:
    order_id: str
    items: list[Item]
    status: ReservationStatus = ReservationStatus.RESERVED


@dataclass
class Shortage(Exception):
    """Some items cannot be reserved; nothing was."""

    product_ids: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return "insufficient stock for " + ", ".join(self.product_ids)


def reserve(order_id: str, items: Sequence[Item], products: Mapping[str, Product]) -> Reservation:
    """Move every item from available to reserved, or raise Shortage and change nothing."""
    short = [
        item.product_id
        for item in items
        if item.product_id not in products or products[item.product_id].available < item.quantity
    ]
    if short:
        raise Shortage(sorted(short))
    for item in items:
        product = products[item.product_id]
        product.available -= item.quantity
        product.reserved += item.quantity
    return Reservation(order_id=order_id, items=list(items))


def release(reservation: Reservation, products: Mapping[str, Product]) -> bool:
    """Return a reservation's units to available stock; False if it was already released."""
    if reservation.status is ReservationStatus.RELEASED:
        return False
    for item in reservation.items:
        product = products[item.product_id]
        product.reserved -= item.quantity
        product.available += item.quantity
    reservation.status = ReservationStatus.RELEASED
    return True


# The catalogue a fresh shop starts with (seeded once, on first start).
CATALOGUE = (
    Product("sku-espresso", "Espresso beans 1 kg", "Dark roast, whole beans", 1890, "EUR", 500),
    Product("sku-grinder", "Burr grinder", "Conical burrs, 40 settings", 12900, "EUR", 50),
    Product("sku-kettle", "Gooseneck kettle", "0.9 l, temperature control", 7900, "EUR", 80),
    Product("sku-filter", "Paper filters x100", "Size 02, unbleached", 490, "EUR", 1000),
    Product("sku-scale", "Coffee scale", "0.1 g resolution, timer", 3900, "EUR", 120),
    Product("sku-mug", "Stoneware mug", "350 ml, handmade", 1600, "EUR", 300),
)
