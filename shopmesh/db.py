"""The database of one service: connections, migrations and the platform's own tables.

Each service owns one SQLAlchemy URL. SQL is built with SQLAlchemy Core everywhere;
how it runs depends on the backend:

- **SQLite** (the default) runs *on the event loop*, through the stdlib driver. A
  statement on a local file takes tens of microseconds; handing it to a thread (what
  aiosqlite does for every statement) cost ten times that in switches alone
  (docs/benchmarks.md). The file is in WAL mode so readers never wait for the writer.
  A process has one writer connection: units of work queue for it on an asyncio lock,
  in order, and each begins `BEGIN IMMEDIATE`, so a second process on the same file
  (two payment instances) waits its turn instead of failing "database is locked" at
  commit. That wait is the one that could block the loop, so it is not SQLite's busy
  handler but an `asyncio.sleep` between attempts.
- **PostgreSQL** (any other URL) uses SQLAlchemy's asyncio engine with psycopg 3: the
  server is across a socket, and waiting for it must not hold the loop.

Both give the same two engine-like objects, `reader` and `writer`, whose `connect()` and
`begin()` are async context managers yielding a `Connection` (SQLAlchemy's own
`AsyncConnection` on PostgreSQL): repositories and queries are written once.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast, overload

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.sql.selectable import TypedReturnsRows

_T = TypeVar("_T", bound=tuple[Any, ...])

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


class Connection(Protocol):
    """What repositories and queries use: SQLAlchemy's AsyncConnection, or its surface."""

    @overload
    async def execute(
        self, statement: TypedReturnsRows[_T], parameters: Any = None
    ) -> sa.CursorResult[_T]: ...

    @overload
    async def execute(
        self, statement: sa.Executable, parameters: Any = None
    ) -> sa.CursorResult[Any]: ...

    async def scalar(self, statement: sa.Executable, parameters: Any = None) -> Any: ...

    def begin_nested(self) -> AbstractAsyncContextManager[Any]: ...

    async def commit(self) -> None: ...

    async def rollback(self) -> None: ...


class Engine(Protocol):
    """`connect()`: a connection whose uncommitted work is rolled back at the end;
    `begin()`: the same, committed at the end unless the block raised."""

    def connect(self) -> AbstractAsyncContextManager[Connection]: ...

    def begin(self) -> AbstractAsyncContextManager[Connection]: ...


class Database:
    """A service's database: `writer` for units of work (on SQLite one transaction at a
    time per process, `BEGIN IMMEDIATE`), `reader` for queries."""

    def __init__(self, url: str) -> None:
        self.url = sa.make_url(url)
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        self.is_postgresql = self.url.get_backend_name() == "postgresql"
        self.reader: Engine
        self.writer: Engine
        if self.is_sqlite:
            # `sqlite+aiosqlite://` URLs of earlier versions still work: same file.
            self.url = self.url.set(drivername="sqlite+pysqlite")
            if self.url.database in (None, "", ":memory:"):
                raise ValueError("a service's SQLite database must be a file (WAL, shared)")
            Path(self.url.database).parent.mkdir(parents=True, exist_ok=True)
            self._sqlite = _SqliteFile(self.url)
            self.reader, self.writer = self._sqlite.reader, self._sqlite.writer
        else:
            engine = create_async_engine(self.url, pool_pre_ping=True)
            self._async_engine = engine
            self.reader = self.writer = cast(Engine, engine)

    async def migrate(self, versions: Path) -> None:
        """Run the service's migrations to head. Safe when instances start together.

        In a thread, on a connection of its own: once per start, and on SQLite it may
        wait in the busy handler for another instance's migration."""
        if self.is_sqlite:
            await asyncio.to_thread(_migrate_sqlite, self.url, versions)
        else:
            async with self._async_engine.begin() as conn:
                await conn.run_sync(_upgrade, versions)

    async def dispose(self) -> None:
        if self.is_sqlite:
            self._sqlite.close()
        else:
            await self._async_engine.dispose()


# SQLite on the event loop.


def _pragmas(dbapi_connection: sqlite3.Connection, busy_timeout_ms: int) -> None:
    # Transaction control is ours (BEGIN below), not the driver's implicit one.
    dbapi_connection.isolation_level = None
    for pragma in (
        "PRAGMA journal_mode=WAL",
        f"PRAGMA busy_timeout={busy_timeout_ms}",
        # WAL with NORMAL: a commit writes the log without an fsync; a power cut may
        # lose the last commits, a process crash loses nothing.
        "PRAGMA synchronous=NORMAL",
        "PRAGMA foreign_keys=ON",
    ):
        dbapi_connection.execute(pragma)


class _OnLoop:
    """A synchronous SQLAlchemy connection behind the async `Connection` surface.

    The coroutines never suspend: a statement runs to completion where it is awaited."""

    def __init__(self, conn: sa.Connection) -> None:
        self.sync = conn

    @overload
    async def execute(
        self, statement: TypedReturnsRows[_T], parameters: Any = None
    ) -> sa.CursorResult[_T]: ...

    @overload
    async def execute(
        self, statement: sa.Executable, parameters: Any = None
    ) -> sa.CursorResult[Any]: ...

    async def execute(self, statement: Any, parameters: Any = None) -> sa.CursorResult[Any]:
        return self.sync.execute(statement, parameters)

    async def scalar(self, statement: sa.Executable, parameters: Any = None) -> Any:
        return self.sync.scalar(statement, parameters)

    @asynccontextmanager
    async def begin_nested(self) -> AsyncIterator[None]:
        with self.sync.begin_nested():
            yield

    async def commit(self) -> None:
        self.sync.commit()
        _raw(self.sync).commit()  # a transaction SQLAlchemy never saw a statement of

    async def rollback(self) -> None:
        self.sync.rollback()
        _raw(self.sync).rollback()


def _raw(conn: sa.Connection) -> sqlite3.Connection:
    return cast(sqlite3.Connection, conn.connection.driver_connection)


class _SqliteReader:
    """Read transactions (`BEGIN` deferred: one snapshot per block) on connections kept
    open: a free list, because the engine's pool checkout and return cost more than the
    primary-key read they wrap (bench/profile.py)."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self._idle: list[sa.Connection] = []

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[Connection]:
        conn = self._idle.pop() if self._idle else self.engine.connect()
        raw = _raw(conn)
        raw.execute("BEGIN")
        try:
            yield _OnLoop(conn)
        except BaseException:
            conn.close()  # in whatever state the error left it: not reused
            raise
        conn.rollback()
        raw.rollback()
        self._idle.append(conn)

    def begin(self) -> AbstractAsyncContextManager[Connection]:
        return self.connect()  # nothing to commit in a read

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()


class _SqliteWriter:
    """The process's one write connection, lent to one transaction at a time."""

    # Attempts to take the file's write lock held by another process: short first
    # (a unit of work holds it for well under a millisecond), then up to 20 ms apart.
    FIRST_WAIT, LONGEST_WAIT, GIVE_UP = 0.0005, 0.02, 30.0

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self._conn: sa.Connection | None = None
        self._lock = asyncio.Lock()

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[Connection]:
        async with self._lock:
            if self._conn is None or self._conn.closed or self._conn.invalidated:
                self._conn = self.engine.connect()
            conn = self._conn
            await self._begin_immediate(_raw(conn))
            try:
                yield _OnLoop(conn)
            finally:
                conn.rollback()
                _raw(conn).rollback()

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[Connection]:
        async with self.connect() as conn:
            yield conn
            await conn.commit()

    async def _begin_immediate(self, raw: sqlite3.Connection) -> None:
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self.GIVE_UP
        wait = self.FIRST_WAIT
        while True:
            try:
                raw.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as error:
                if "locked" not in str(error) or loop.time() > give_up:
                    raise
            await asyncio.sleep(wait)
            wait = min(wait * 2, self.LONGEST_WAIT)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


class _SqliteFile:
    def __init__(self, url: sa.URL) -> None:
        # Readers may meet a checkpoint briefly; the writer never waits in SQLite (above).
        # The reader keeps its own free list; no pool limit that could block the loop.
        self._read_engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        self._write_engine = sa.create_engine(url, poolclass=sa.pool.StaticPool)
        sa.event.listen(self._read_engine, "connect", lambda c, _r: _pragmas(c, 1000))
        sa.event.listen(self._write_engine, "connect", lambda c, _r: _pragmas(c, 0))
        self.reader = _SqliteReader(self._read_engine)
        self.writer = _SqliteWriter(self._write_engine)

    def close(self) -> None:
        self.writer.close()
        self.reader.close()
        self._write_engine.dispose()
        self._read_engine.dispose()


# Migrations.


def _migrate_sqlite(url: sa.URL, versions: Path) -> None:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    sa.event.listen(engine, "connect", lambda c, _r: _pragmas(c, 30_000))
    # Instances starting together migrate one at a time: the first takes the lock.
    sa.event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
    try:
        with engine.begin() as conn:
            _upgrade(conn, versions)
    finally:
        engine.dispose()


def _upgrade(connection: sa.Connection, versions: Path) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_ENV))
    config.set_main_option("path_separator", "os")
    config.set_main_option("version_locations", str(versions))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")
