"""Inventory's first schema: products, reservations and the platform tables.

Revision ID: inventory_0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from shopmesh.migrations.platform import create_platform_tables, drop_platform_tables

revision = "inventory_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "products",
        sa.Column("product_id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("description", sa.String(500), nullable=False),
        sa.Column("price_minor", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("available", sa.Integer, nullable=False),
        sa.Column("reserved", sa.Integer, nullable=False),
        sa.CheckConstraint("available >= 0", name="available_not_negative"),
        sa.CheckConstraint("reserved >= 0", name="reserved_not_negative"),
    )
    op.create_table(
        "reservations",
        sa.Column("order_id", sa.String(36), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "reservation_items",
        sa.Column(
            "order_id", sa.String(36), sa.ForeignKey("reservations.order_id"), primary_key=True
        ),
        sa.Column("product_id", sa.String(64), primary_key=True),
        sa.Column("quantity", sa.Integer, nullable=False),
    )
    create_platform_tables()


def downgrade() -> None:
    drop_platform_tables()
    op.drop_table("reservation_items")
    op.drop_table("reservations")
    op.drop_table("products")
