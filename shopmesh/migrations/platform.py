"""The platform tables (outbox, processed_events) for a service's first migration."""

from __future__ import annotations

from alembic import op

from shopmesh.db import platform_metadata


def create_platform_tables() -> None:
    platform_metadata.create_all(op.get_bind())


def drop_platform_tables() -> None:
    platform_metadata.drop_all(op.get_bind())
