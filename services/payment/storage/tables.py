"""Payment's tables (the migrations create them; this is how queries see them)."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

payments = sa.Table(
    "payments",
    metadata,
    sa.Column("payment_id", sa.String(36), primary_key=True),
    sa.Column("order_id", sa.String(36), nullable=False),
    sa.Column("user_id", sa.String(64), nullable=False),
    sa.Column("amount_minor", sa.BigInteger, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("processed_by", sa.String(64), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("amount_minor >= 0", name="amount_not_negative"),
    # One payment per order, whichever instance gets there first.
    sa.UniqueConstraint("order_id", name="uq_payments_order_id"),
)
# The per-user limit sums a user's completed payments.
sa.Index("ix_payments_user_status", payments.c.user_id, payments.c.status)
