"""Order's tables (the migrations create them; this is how queries see them)."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

orders = sa.Table(
    "orders",
    metadata,
    sa.Column("order_id", sa.String(36), primary_key=True),
    sa.Column("user_id", sa.String(36), nullable=False),
    sa.Column("idempotency_key", sa.String(128), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("payment_card", sa.String(19), nullable=False),
    sa.Column("cancel_reason", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    # Idempotency: one order per key and user, even when two requests race.
    sa.UniqueConstraint("user_id", "idempotency_key", name="uq_orders_user_key"),
)
sa.Index("ix_orders_user_created", orders.c.user_id, orders.c.created_at, orders.c.order_id)

order_lines = sa.Table(
    "order_lines",
    metadata,
    sa.Column("order_id", sa.String(36), sa.ForeignKey("orders.order_id"), primary_key=True),
    sa.Column("position", sa.Integer, primary_key=True),
    sa.Column("product_id", sa.String(64), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("quantity", sa.Integer, nullable=False),
    sa.Column("unit_price_minor", sa.BigInteger, nullable=False),
)

order_timeline = sa.Table(
    "order_timeline",
    metadata,
    # Recording order: the timeline reads oldest first by it.
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("order_id", sa.String(36), sa.ForeignKey("orders.order_id"), nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("step", sa.String(200), nullable=False),
    sa.Column("event_id", sa.String(36), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("detail", sa.Text, nullable=False),
)
sa.Index("ix_order_timeline_order", order_timeline.c.order_id, order_timeline.c.seq)
