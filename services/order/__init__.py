"""Order: orders, their priced lines and each order's saga timeline."""
