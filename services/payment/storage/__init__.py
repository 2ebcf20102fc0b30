"""Payment's storage: tables, repositories and its unit of work."""

from services.payment.storage.repository import UnitOfWork

__all__ = ["UnitOfWork"]
