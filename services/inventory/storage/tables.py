"""Inventory's tables (the migrations create them; this is how queries see them)."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

products = sa.Table(
    "products",
    metadata,
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

reservations = sa.Table(
    "reservations",
    metadata,
    sa.Column("order_id", sa.String(36), primary_key=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

reservation_items = sa.Table(
    "reservation_items",
    metadata,
    sa.Column("order_id", sa.String(36), sa.ForeignKey("reservations.order_id"), primary_key=True),
    sa.Column("product_id", sa.String(64), primary_key=True),
    sa.Column("quantity", sa.Integer, nullable=False),
)
