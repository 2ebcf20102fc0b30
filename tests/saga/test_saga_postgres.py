"""The order saga end to end with every service on PostgreSQL.

The whole mesh runs as in test_saga.py, each service on a database of its own on the
session's embedded PostgreSQL server (both payment instances share payment's, as they
share its SQLite file by default). test_saga.py's journeys are collected here a second
time, on this module's mesh; then a small contention run. Each ends with the checker.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from shopmesh.runner import Mesh
from shopmesh.topology import load_topology
from tests.saga.test_saga import (
    confirms_exactly_the_stock,
    shop,
    test_a_paid_and_reserved_order_is_confirmed,
    test_no_stock_refunds_the_payment_then_cancels,
)
from tests.support.databases import PostgresServer
from tests.support.mesh import running_mesh
from tests.support.shop import Shop

pytestmark = [pytest.mark.integration, pytest.mark.postgresql, pytest.mark.timeout(300)]

__all__ = [  # collected here again, on this module's mesh
    "shop",
    "test_a_paid_and_reserved_order_is_confirmed",
    "test_no_stock_refunds_the_payment_then_cancels",
]


@pytest.fixture(scope="module")
def databases(postgres: PostgresServer) -> dict[str, str]:
    """A new database per service, by service name."""
    return {s.name: postgres.create_database(s.name) for s in load_topology(environ={}).services}


@pytest.fixture(scope="module")
def mesh(
    tmp_path_factory: pytest.TempPathFactory, postgres: PostgresServer, databases: dict[str, str]
) -> Iterator[Mesh]:
    environ = {f"SHOPMESH_{name.upper()}_DB": postgres.url(db) for name, db in databases.items()}
    with running_mesh(tmp_path_factory.mktemp("saga-postgres"), environ) as running:
        yield running


async def test_contention_confirms_exactly_what_stock_allows(shop: Shop) -> None:
    # Row locks, not SQLite's one writer at a time, keep the stock right here.
    await confirms_exactly_the_stock(shop, "sku-filter", units=10, orders=40)


def test_every_service_kept_its_data_in_postgresql(
    mesh: Mesh, postgres: PostgresServer, databases: dict[str, str]
) -> None:
    # Last in the module: every service has handled events by now.
    for name, database in databases.items():
        events = "SELECT (SELECT count(*) FROM outbox) + (SELECT count(*) FROM processed_events)"
        assert int(str(postgres.scalar(database, events))) > 0, name
    assert list((mesh.var.root / "data").glob("*.db")) == []  # no SQLite file
