"""Notification's first schema: notifications and the platform tables.

Revision ID: notification_0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from shopmesh.migrations.platform import create_platform_tables, drop_platform_tables

revision = "notification_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "notifications",
        sa.Column("notification_id", sa.String(36), primary_key=True),
        sa.Column("user_id", sa.String(36), nullable=False),
        sa.Column("order_id", sa.String(36), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("recipient", sa.String(254), nullable=False),
        sa.Column("subject", sa.String(300), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("order_id", "kind", name="uq_notifications_order_kind"),
    )
    op.create_index(
        "ix_notifications_user_created",
        "notifications",
        ["user_id", "created_at", "notification_id"],
    )
    create_platform_tables()


def downgrade() -> None:
    drop_platform_tables()
    op.drop_index("ix_notifications_user_created", table_name="notifications")
    op.drop_table("notifications")
