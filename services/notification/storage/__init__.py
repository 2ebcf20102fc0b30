"""Notification's storage: its table, repository and unit of work."""

from services.notification.storage.repository import UnitOfWork

__all__ = ["UnitOfWork"]
