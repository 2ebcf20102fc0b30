"""The database of one service: engine, migrations and the platform's own tables.

Each service owns one SQLAlchemy URL. SQLite (the default) runs in WAL mode so readers
never wait for the writer, and every transaction that may write starts with
`BEGIN IMMEDIATE`: pysqlite's deferred `BEGIN` fails at once with "database is locked"
when another process (the second payment instance) committed between our read and our
write, busy timeout or not. With IMMEDIATE the second writer waits its turn instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

MIGRATIONS_ENV = Path(__file__).parent / "migrations"

# Tables every service has, created by each service's first migration
# (shopmesh.migrations.platform). They live in the service's own database.
platform_metadata = sa.MetaData()

outbox = sa.Table(
    "outbox",
    platform_metadata,
    # Publish order; the relay reads unpublished rows by it.
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("event_id", sa.String(36), nullable=False, unique=True),
    sa.Column("subject", sa.String(200), nullable=False),
    sa.Column("event_type", sa.String(200), nullable=False),
    sa.Column("payload", sa.LargeBinary, nullable=False),
    sa.Column("traceparent", sa.String(64), nullable=False, server_default=""),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
)
sa.Index("ix_outbox_unpublished", outbox.c.published_at, outbox.c.seq)

processed_events = sa.Table(
    "processed_events",
    platform_metadata,
    sa.Column("consumer", sa.String(100), primary_key=True),
    sa.Column("event_id", sa.String(36), primary_key=True),
    sa.Column("processed_at", sa.DateTime(timezone=True), nullable=False),
)


class Database:
    """A service's engines. `writer` begins IMMEDIATE on SQLite, one transaction at a time
    per process; `reader` does not."""

    def __init__(self, url: str) -> None:
        self.url = sa.make_url(url)
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        self.is_postgresql = self.url.get_backend_name() == "postgresql"
        if self.is_sqlite and self.url.database not in (None, "", ":memory:"):
            Path(self.url.database).parent.mkdir(parents=True, exist_ok=True)
        self.engine: AsyncEngine = create_async_engine(self.url, pool_pre_ping=not self.is_sqlite)
        self.write_engine = self.engine
        if self.is_sqlite:
            _configure_sqlite(self.engine)
            if self.url.database not in (None, "", ":memory:"):
                # SQLite has one writer at a time. With a pool, each writer of this process
                # takes a connection and waits in SQLite's busy handler, which sleeps in
                # growing steps (up to 100 ms); on one connection they queue in order
                # instead. Measured, 20 concurrent write transactions: p99 240 ms with
                # the pool, 35 ms on one connection (docs/benchmarks.md).
                self.write_engine = create_async_engine(self.url, pool_size=1, max_overflow=0)
                _configure_sqlite(self.write_engine)
        self.writer = self.write_engine.execution_options(shopmesh_write=True)
        self.reader = self.engine

    async def migrate(self, versions: Path) -> None:
        """Run the service's migrations to head. Safe when instances start together."""
        async with self.writer.connect() as conn:
            await conn.run_sync(_upgrade, versions)
            await conn.commit()

    async def dispose(self) -> None:
        await self.engine.dispose()
        if self.write_engine is not self.engine:
            await self.write_engine.dispose()


def _configure_sqlite(engine: AsyncEngine) -> None:
    # SQLAlchemy's documented recipe for aiosqlite: take transaction control away from
    # the driver so we can choose the BEGIN statement.
    @sa.event.listens_for(engine.sync_engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @sa.event.listens_for(engine.sync_engine, "begin")
    def on_begin(conn: sa.Connection) -> None:
        write = conn.get_execution_options().get("shopmesh_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def _upgrade(connection: sa.Connection, versions: Path) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_ENV))
    config.set_main_option("path_separator", "os")
    config.set_main_option("version_locations", str(versions))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")
