"""Payment: charges an order once, and refunds it when the saga compensates."""
