"""Notification's rules: what each kind of notification says. Plain Python: no gRPC, no
SQL."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class Kind(StrEnum):
    """What a notification is about; one per order and kind. The values are stored."""

    ORDER_CONFIRMED = "order_confirmed"
    ORDER_CANCELLED = "order_cancelled"
    PAYMENT_REFUNDED = "payment_refunded"


# ISO 4217 currencies whose minor unit is not a hundredth; every other has two decimals.
_DECIMALS = {
    **dict.fromkeys(("BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG"), 0),
    **dict.fromkeys(("RWF", "UGX", "UYI", "VND", "VUV", "XAF", "XOF", "XPF"), 0),
    **dict.fromkeys(("BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"), 3),
}


@dataclass(frozen=True)
class Money:
    amount_minor: int
    currency: str

    def __str__(self) -> str:
        """`12.50 EUR` for 1250 EUR: minor units shown with the currency's decimals."""
        decimals = _DECIMALS.get(self.currency, 2)
        sign = "-" if self.amount_minor < 0 else ""
        whole, fraction = divmod(abs(self.amount_minor), 10**decimals)
        shown = f"{whole}.{fraction:0{decimals}d}" if decimals else str(whole)
        return f"{sign}{shown} {self.currency}"


@dataclass(frozen=True)
class Letter:
    subject: str
    body: str


@dataclass(frozen=True)
class Notification:
    notification_id: str
    user_id: str
    order_id: str
    kind: Kind
    # The user's email; empty when the user service did not know the user.
    recipient: str
    subject: str
    body: str
    created_at: datetime


def _greeting(name: str) -> str:
    return f"Hello {name}," if name else "Hello,"


def order_confirmed(order_id: str, name: str, total: Money) -> Letter:
    return Letter(
        subject=f"Your order {order_id} is confirmed",
        body=f"{_greeting(name)}\n\nwe charged {total} and reserved your items: "
        f"order {order_id} is confirmed.\n",
    )


def order_cancelled(order_id: str, name: str, reason: str) -> Letter:
    because = f": {reason}" if reason else ""
    return Letter(
        subject=f"Your order {order_id} was cancelled",
        body=f"{_greeting(name)}\n\nyour order {order_id} was cancelled{because}.\n",
    )


def payment_refunded(order_id: str, name: str, amount: Money, reason: str) -> Letter:
    because = f" ({reason})" if reason else ""
    return Letter(
        subject=f"Refund of {amount} for order {order_id}",
        body=f"{_greeting(name)}\n\nwe refunded {amount} for order {order_id}{because}.\n",
    )
