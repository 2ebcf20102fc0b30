"""Inventory: the product catalogue, stock levels and reservations."""
