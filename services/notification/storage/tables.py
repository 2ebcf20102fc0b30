"""Notification's tables (the migrations create them; this is how queries see them)."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

notifications = sa.Table(
    "notifications",
    metadata,
    sa.Column("notification_id", sa.String(36), primary_key=True),
    sa.Column("user_id", sa.String(36), nullable=False),
    sa.Column("order_id", sa.String(36), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("recipient", sa.String(254), nullable=False),
    sa.Column("subject", sa.String(300), nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    # One notification per order and kind, whatever arrives twice.
    sa.UniqueConstraint("order_id", "kind", name="uq_notifications_order_kind"),
)
# ListNotifications: one user's rows, newest first.
sa.Index(
    "ix_notifications_user_created",
    notifications.c.user_id,
    notifications.c.created_at,
    notifications.c.notification_id,
)

# Each user's address as UserRegistered announced it: a notification needs no call to
# the user service for a user it has heard of (services/notification/events.py).
recipients = sa.Table(
    "recipients",
    metadata,
    sa.Column("user_id", sa.String(36), primary_key=True),
    sa.Column("email", sa.String(254), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
)
