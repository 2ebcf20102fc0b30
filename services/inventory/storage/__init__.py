"""Inventory's storage: tables, repositories and its unit of work."""

from services.inventory.storage.repository import UnitOfWork

__all__ = ["UnitOfWork"]
