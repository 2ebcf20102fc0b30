"""Inventory's rules, alone: no database, no gRPC."""

from __future__ import annotations

import pytest

from services.inventory.domain import (
    Item,
    Product,
    ReservationStatus,
    Shortage,
    release,
    reserve,
)
from shopmesh.errors import FailedPrecondition

pytestmark = pytest.mark.unit


def make(product_id: str = "sku-a", available: int = 10) -> Product:
    return Product(product_id, "A", "", 100, "EUR", available)


def test_adjust_adds_and_removes_stock() -> None:
    product = make(available=10)
    product.adjust(5)
    product.adjust(-15)
    assert product.available == 0


def test_adjust_never_goes_negative() -> None:
    product = make(available=3)
    with pytest.raises(FailedPrecondition, match="only 3 available"):
        product.adjust(-4)
    assert product.available == 3


def test_reserve_moves_every_item_from_available_to_reserved() -> None:
    products = {"sku-a": make("sku-a", 5), "sku-b": make("sku-b", 2)}
    reservation = reserve("o1", [Item("sku-a", 5), Item("sku-b", 1)], products)
    assert reservation.status is ReservationStatus.RESERVED
    assert (products["sku-a"].available, products["sku-a"].reserved) == (0, 5)
    assert (products["sku-b"].available, products["sku-b"].reserved) == (1, 1)


def test_reserve_is_all_or_nothing() -> None:
    products = {"sku-a": make("sku-a", 5), "sku-b": make("sku-b", 0)}
    with pytest.raises(Shortage) as raised:
        reserve("o1", [Item("sku-a", 1), Item("sku-b", 1), Item("sku-x", 1)], products)
    assert raised.value.product_ids == ["sku-b", "sku-x"]
    assert products["sku-a"].available == 5
    assert products["sku-a"].reserved == 0


def test_release_returns_stock_once() -> None:
    products = {"sku-a": make("sku-a", 5)}
    reservation = reserve("o1", [Item("sku-a", 2)], products)
    assert release(reservation, products) is True
    assert release(reservation, products) is False
    assert (products["sku-a"].available, products["sku-a"].reserved) == (5, 0)
