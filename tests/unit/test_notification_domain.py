"""Notification's rules, alone: what each kind says, and how money reads."""

from __future__ import annotations

import pytest

from services.notification.domain import (
    Kind,
    Money,
    order_cancelled,
    order_confirmed,
    payment_refunded,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("amount_minor", "currency", "shown"),
    [
        (1250, "EUR", "12.50 EUR"),
        (5, "EUR", "0.05 EUR"),
        (0, "USD", "0.00 USD"),
        (123456789, "EUR", "1234567.89 EUR"),
        (1250, "JPY", "1250 JPY"),
        (1250, "KWD", "1.250 KWD"),
        (-1250, "EUR", "-12.50 EUR"),
    ],
)
def test_money_reads_in_the_currencys_major_unit(
    amount_minor: int, currency: str, shown: str
) -> None:
    assert str(Money(amount_minor, currency)) == shown


def test_kinds_are_stored_by_stable_names() -> None:
    # Stored in the notifications table: renaming one would orphan existing rows.
    assert {kind.value for kind in Kind} == {
        "order_confirmed",
        "order_cancelled",
        "payment_refunded",
    }


def test_order_confirmed_names_the_order_and_the_total() -> None:
    letter = order_confirmed("o-1", "Ada", Money(1250, "EUR"))
    assert letter.subject == "Your order o-1 is confirmed"
    assert letter.body.startswith("Hello Ada,\n")
    assert "12.50 EUR" in letter.body
    assert "o-1" in letter.body


def test_order_cancelled_gives_the_reason_when_there_is_one() -> None:
    letter = order_cancelled("o-1", "Ada", "payment declined")
    assert letter.subject == "Your order o-1 was cancelled"
    assert "your order o-1 was cancelled: payment declined." in letter.body
    assert "was cancelled.\n" in order_cancelled("o-1", "Ada", "").body


def test_payment_refunded_names_the_amount_and_the_reason() -> None:
    letter = payment_refunded("o-1", "Ada", Money(1890, "EUR"), "stock rejected")
    assert letter.subject == "Refund of 18.90 EUR for order o-1"
    assert "we refunded 18.90 EUR for order o-1 (stock rejected)." in letter.body
    assert "for order o-1.\n" in payment_refunded("o-1", "Ada", Money(1, "EUR"), "").body


def test_a_user_without_a_name_is_greeted_plainly() -> None:
    for letter in (
        order_confirmed("o-1", "", Money(1, "EUR")),
        order_cancelled("o-1", "", "x"),
        payment_refunded("o-1", "", Money(1, "EUR"), "x"),
    ):
        assert letter.body.startswith("Hello,\n")
