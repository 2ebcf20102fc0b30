"""Order's storage: tables, repositories and its unit of work."""

from services.order.storage.repository import UnitOfWork

__all__ = ["UnitOfWork"]
