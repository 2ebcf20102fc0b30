"""User's storage: tables, repositories and its unit of work."""

from services.user.storage.repository import UnitOfWork

__all__ = ["UnitOfWork"]
