"""User's first schema: users (unique by email) and the platform tables.

Revision ID: user_0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from shopmesh.migrations.platform import create_platform_tables, drop_platform_tables

revision = "user_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("user_id", sa.String(36), primary_key=True),
        sa.Column("email", sa.String(254), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ux_users_email", "users", ["email"], unique=True)
    create_platform_tables()


def downgrade() -> None:
    drop_platform_tables()
    op.drop_index("ux_users_email", table_name="users")
    op.drop_table("users")
