"""Alembic environment shared by every service.

Each service keeps only its own `versions/` folder (passed as `version_locations`); the
connection comes from shopmesh.db.Database.migrate, already inside a write transaction.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

connection: sa.Connection = context.config.attributes["connection"]

if connection.dialect.name == "postgresql":
    # Instances of one service may start together: let one migrate at a time.
    connection.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('shopmesh-migrations'))"))

context.configure(connection=connection, target_metadata=None)
with context.begin_transaction():
    context.run_migrations()
