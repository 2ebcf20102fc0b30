"""Payment's rules: one charge per order, refunds only of what was charged.

The payment provider is a deterministic fake, so every outcome can be produced on purpose:

- it declines the test card ``4000000000000002`` ("card declined");
- it declines a charge that would bring the user's total of COMPLETED payments (refunded
  ones no longer count) above a per-user limit, by default 500000 minor units
  (5,000.00) per currency ("over the per-user limit");
- it accepts every other charge;
- refunds always succeed, except that it can be told to be unavailable for the first N
  refunds it is asked for (raising ProviderUnavailable), to exercise the saga's retries.

Plain Python: no gRPC, no SQL. The caller (main) decides the limit and N.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from shopmesh.errors import FailedPrecondition, Unavailable

TEST_DECLINED_CARD = "4000000000000002"
DEFAULT_USER_LIMIT_MINOR = 500_000
CARD_DECLINED = "card declined"
OVER_LIMIT = "over the per-user limit"


class PaymentStatus(StrEnum):
    COMPLETED = "completed"
    FAILED = "failed"
    REFUNDED = "refunded"


class ProviderUnavailable(Unavailable):
    """The provider could not be reached; the same request may succeed later."""


@dataclass(frozen=True)
class Charge:
    """What an order asks to be charged."""

    order_id: str
    user_id: str
    amount_minor: int
    currency: str
    card: str  # empty: the card on file


class FakeProvider:
    """The payment provider (see the module docstring for its rules)."""

    def __init__(
        self, user_limit_minor: int = DEFAULT_USER_LIMIT_MINOR, refund_failures: int = 0
    ) -> None:
        if user_limit_minor < 0 or refund_failures < 0:
            raise ValueError("the user limit and the refund failures must not be negative")
        self.user_limit_minor = user_limit_minor
        self._refund_failures_left = refund_failures

    def decline_reason(self, charge: Charge, completed_total_minor: int) -> str:
        """Why the provider declines `charge`, or "" when it takes it.

        `completed_total_minor` is what the user already has in COMPLETED payments in
        the charge's currency.
        """
        if charge.card == TEST_DECLINED_CARD:
            return CARD_DECLINED
        if completed_total_minor + charge.amount_minor > self.user_limit_minor:
            return OVER_LIMIT
        return ""

    def refund(self, payment: Payment) -> None:
        """Give `payment`'s amount back (a real provider would key this on payment_id)."""
        if self._refund_failures_left > 0:
            self._refund_failures_left -= 1
            raise ProviderUnavailable(f"provider unavailable refunding {payment.payment_id}")


@dataclass
class Payment:
    payment_id: str
    order_id: str
    user_id: str
    amount_minor: int
    currency: str
    status: PaymentStatus
    reason: str
    processed_by: str  # the instance that took the charge
    created_at: datetime
    updated_at: datetime

    def refund(self, provider: FakeProvider, reason: str, at: datetime) -> bool:
        """Refund a COMPLETED payment in full; False if it was already refunded.

        A FAILED payment charged nothing, so it can never be refunded. ProviderUnavailable
        leaves the payment unchanged.
        """
        if self.status is PaymentStatus.FAILED:
            raise FailedPrecondition(f"payment {self.payment_id} failed; nothing to refund")
        if self.status is PaymentStatus.REFUNDED:
            return False
        provider.refund(self)
        self.status = PaymentStatus.REFUNDED
        self.reason = reason
        self.updated_at = at
        return True


def take_payment(
    charge: Charge,
    provider: FakeProvider,
    completed_total_minor: int,
    processed_by: str,
    at: datetime,
) -> Payment:
    """Ask the provider to charge; a COMPLETED payment, or a FAILED one with its reason."""
    declined = provider.decline_reason(charge, completed_total_minor)
    return Payment(
        payment_id=str(uuid.uuid4()),
        order_id=charge.order_id,
        user_id=charge.user_id,
        amount_minor=charge.amount_minor,
        currency=charge.currency,
        status=PaymentStatus.FAILED if declined else PaymentStatus.COMPLETED,
        reason=declined,
        processed_by=processed_by,
        created_at=at,
        updated_at=at,
    )
