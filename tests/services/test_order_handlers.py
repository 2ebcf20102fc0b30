"""PlaceOrder's use case on a real database, with the remote services faked at the boundary
so that a race can be staged exactly."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import sqlalchemy as sa

from services.order import handlers
from services.order.domain import CatalogueEntry, LineInput, Order
from services.order.main import SPEC
from services.order.storage import UnitOfWork
from services.order.storage.tables import orders
from shopmesh.db import Database, outbox
from shopmesh.errors import FailedPrecondition, Unavailable
from shopmesh.identity import Caller, Role

pytestmark = pytest.mark.integration


class Catalogue:
    """inventory as placing an order sees it; `during` runs inside the first price look-up,
    that is after the idempotency look-up and before the unit of work."""

    def __init__(self, during: Callable[[], Awaitable[object]] | None = None) -> None:
        self.during = during
        self.asked: list[str] = []

    async def product(self, product_id: str) -> CatalogueEntry | None:
        self.asked.append(product_id)
        if self.during is not None:
            during, self.during = self.during, None
            await during()
        return CatalogueEntry(product_id, product_id.upper(), 500, "EUR")


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    database = Database(db_url)
    await database.migrate(SPEC.migrations)
    yield database
    await database.dispose()


def place(
    db: Database, caller: Caller, key: str, product: str, catalogue: Catalogue
) -> Awaitable[Order]:
    return handlers.place_order(
        UnitOfWork(db, "order-1"), caller, key, [LineInput(product, 1)], "", catalogue
    )


async def counts(db: Database) -> tuple[int, int]:
    async with db.reader.connect() as conn:
        stored = await conn.scalar(sa.select(sa.func.count()).select_from(orders))
        events = await conn.scalar(sa.select(sa.func.count()).select_from(outbox))
    return stored or 0, events or 0


async def test_a_retry_returns_the_first_order_without_asking_anyone(db: Database) -> None:
    caller = Caller(str(uuid.uuid4()), Role.CUSTOMER)
    first = await place(db, caller, "key-00001", "sku-a", Catalogue())
    retry = Catalogue()
    again = await place(db, caller, "key-00001", "sku-b", retry)
    assert again == first
    assert retry.asked == []
    assert await counts(db) == (1, 1)


async def test_the_loser_of_a_race_on_one_key_returns_the_winners_order(db: Database) -> None:
    caller = Caller(str(uuid.uuid4()), Role.CUSTOMER)
    winner: list[Order] = []

    async def the_other_request_commits() -> None:
        winner.append(await place(db, caller, "key-00001", "sku-b", Catalogue()))

    # This request found no order for the key, then another one committed before its
    # insert: the unique constraint refuses the second order.
    loser = await place(db, caller, "key-00001", "sku-a", Catalogue(the_other_request_commits))
    assert loser == winner[0]
    assert [line.product_id for line in loser.lines] == ["sku-b"]
    assert await counts(db) == (1, 1)


async def test_keys_belong_to_their_user(db: Database) -> None:
    one, two = (Caller(str(uuid.uuid4()), Role.CUSTOMER) for _ in range(2))
    first = await place(db, one, "key-00001", "sku-a", Catalogue())
    second = await place(db, two, "key-00001", "sku-a", Catalogue())
    assert first.order_id != second.order_id
    assert await counts(db) == (2, 2)


async def test_a_failed_dependency_stores_nothing_and_the_key_stays_free(db: Database) -> None:
    caller = Caller(str(uuid.uuid4()), Role.CUSTOMER)

    async def inventory_is_down() -> None:
        raise Unavailable("inventory is unavailable (UNAVAILABLE)")

    with pytest.raises(Unavailable):
        await place(db, caller, "key-00001", "sku-a", Catalogue(inventory_is_down))
    assert await counts(db) == (0, 0)
    placed = await place(db, caller, "key-00001", "sku-a", Catalogue())
    assert placed.idempotency_key == "key-00001"


async def test_every_line_is_priced(db: Database) -> None:
    caller = Caller(str(uuid.uuid4()), Role.CUSTOMER)
    catalogue = Catalogue()
    order = await handlers.place_order(
        UnitOfWork(db, "order-1"),
        caller,
        "key-00001",
        [LineInput("sku-a", 2), LineInput("sku-b", 3)],
        "",
        catalogue,
    )
    # Only inventory is asked: the caller's id is trusted as the gateway verified it.
    assert sorted(catalogue.asked) == ["sku-a", "sku-b"]
    assert order.total_minor == 2500


async def test_any_user_id_the_gateway_verified_may_order(db: Database) -> None:
    # Nobody asks user whether the id was ever registered: an operator token minted by
    # `shopmesh token` for an arbitrary id (here the default, the nil UUID) is trusted.
    for user_id in (str(uuid.UUID(int=0)), str(uuid.uuid4())):
        order = await place(db, Caller(user_id, Role.ADMIN), "key-00001", "sku-a", Catalogue())
        assert order.user_id == user_id
    assert await counts(db) == (2, 2)


@pytest.mark.parametrize(
    ("user_id", "role"),
    [
        ("payment-1", Role.SERVICE),  # what a service calling on its own behalf says
        ("alice", Role.ADMIN),  # `shopmesh token --user alice`
        ("not-a-uuid", Role.CUSTOMER),
        ("3f2b8c1e-7d4a-4e9b-a6c5-0d1e2f3a4b5c0", Role.CUSTOMER),  # longer than the column
        ("{3f2b8c1e-7d4a-4e9b-a6c5-0d1e2f3a4b5c}", Role.CUSTOMER),
    ],
)
async def test_a_caller_id_that_is_not_a_user_id_is_refused_before_anything(
    db: Database, user_id: str, role: Role
) -> None:
    catalogue = Catalogue()
    with pytest.raises(FailedPrecondition, match=f"no user {re.escape(user_id)}"):
        await place(db, Caller(user_id, role), "key-00001", "sku-a", catalogue)
    assert catalogue.asked == []
    assert await counts(db) == (0, 0)
