"""Payment's rules and its fake provider, alone: no database, no gRPC."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.payment.domain import (
    CARD_DECLINED,
    DEFAULT_USER_LIMIT_MINOR,
    OVER_LIMIT,
    TEST_DECLINED_CARD,
    Charge,
    FakeProvider,
    Payment,
    PaymentStatus,
    ProviderUnavailable,
    take_payment,
)
from shopmesh.errors import FailedPrecondition, Unavailable

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def charge(amount_minor: int = 1000, card: str = "") -> Charge:
    return Charge("order-1", "user-1", amount_minor, "EUR", card)


def taken(provider: FakeProvider | None = None, amount_minor: int = 1000) -> Payment:
    return take_payment(charge(amount_minor), provider or FakeProvider(), 0, "payment-2", T0)


def test_a_charge_completes_and_records_who_took_it() -> None:
    payment = take_payment(charge(2500), FakeProvider(), 0, "payment-2", T0)
    assert payment.status is PaymentStatus.COMPLETED
    assert (payment.order_id, payment.user_id, payment.amount_minor, payment.currency) == (
        "order-1",
        "user-1",
        2500,
        "EUR",
    )
    assert payment.reason == ""
    assert payment.processed_by == "payment-2"
    assert payment.created_at == payment.updated_at == T0


def test_every_payment_gets_its_own_id() -> None:
    assert taken().payment_id != taken().payment_id


def test_the_test_card_is_declined() -> None:
    payment = take_payment(charge(card=TEST_DECLINED_CARD), FakeProvider(), 0, "payment-1", T0)
    assert payment.status is PaymentStatus.FAILED
    assert payment.reason == CARD_DECLINED == "card declined"


def test_other_cards_and_the_card_on_file_are_accepted() -> None:
    for card in ("", "4242424242424242", TEST_DECLINED_CARD + "0"):
        assert FakeProvider().decline_reason(charge(card=card), 0) == ""


def test_the_per_user_limit_counts_what_the_user_already_paid() -> None:
    provider = FakeProvider(user_limit_minor=10_000)
    assert provider.decline_reason(charge(4000), completed_total_minor=6000) == ""  # exactly
    assert provider.decline_reason(charge(4001), completed_total_minor=6000) == OVER_LIMIT
    assert provider.decline_reason(charge(10_001), completed_total_minor=0) == OVER_LIMIT
    payment = take_payment(charge(4001), provider, 6000, "payment-1", T0)
    assert payment.status is PaymentStatus.FAILED
    assert payment.reason == "over the per-user limit"


def test_the_default_limit_is_five_thousand() -> None:
    provider = FakeProvider()
    assert provider.user_limit_minor == DEFAULT_USER_LIMIT_MINOR == 500_000
    assert provider.decline_reason(charge(500_000), 0) == ""
    assert provider.decline_reason(charge(500_001), 0) == OVER_LIMIT


def test_the_test_card_wins_over_the_limit() -> None:
    provider = FakeProvider(user_limit_minor=0)
    assert provider.decline_reason(charge(1, card=TEST_DECLINED_CARD), 0) == CARD_DECLINED


def test_negative_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        FakeProvider(user_limit_minor=-1)
    with pytest.raises(ValueError, match="negative"):
        FakeProvider(refund_failures=-1)


def test_refund_completes_once_then_is_a_no_op() -> None:
    payment = taken()
    later = T0 + timedelta(minutes=5)
    assert payment.refund(FakeProvider(), "order cancelled", later) is True
    assert payment.status is PaymentStatus.REFUNDED
    assert (payment.reason, payment.updated_at, payment.created_at) == (
        "order cancelled",
        later,
        T0,
    )
    assert payment.refund(FakeProvider(), "again", later + timedelta(minutes=1)) is False
    assert (payment.reason, payment.updated_at) == ("order cancelled", later)


def test_a_failed_payment_is_never_refunded() -> None:
    payment = take_payment(charge(card=TEST_DECLINED_CARD), FakeProvider(), 0, "payment-1", T0)
    with pytest.raises(FailedPrecondition, match="nothing to refund"):
        payment.refund(FakeProvider(), "stock rejected: x", T0)
    assert payment.status is PaymentStatus.FAILED
    assert payment.reason == CARD_DECLINED


def test_the_provider_fails_the_first_n_refunds_then_succeeds() -> None:
    provider = FakeProvider(refund_failures=2)
    payment = taken(provider)
    for _ in range(2):
        with pytest.raises(ProviderUnavailable):
            payment.refund(provider, "order cancelled", T0)
        assert payment.status is PaymentStatus.COMPLETED  # unchanged, so it can be retried
    assert payment.refund(provider, "order cancelled", T0) is True
    assert payment.status is PaymentStatus.REFUNDED


def test_provider_unavailable_is_a_retryable_unavailable() -> None:
    assert issubclass(ProviderUnavailable, Unavailable)


def test_a_refunded_payment_asks_the_provider_no_more() -> None:
    provider = FakeProvider(refund_failures=1)
    payment = taken(provider)
    payment.status = PaymentStatus.REFUNDED
    assert payment.refund(provider, "again", T0) is False  # the pending failure is not used
    with pytest.raises(ProviderUnavailable):
        taken(provider).refund(provider, "order cancelled", T0)
