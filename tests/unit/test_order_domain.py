"""Order's rules, alone: pricing, cancelling and the saga's state machine."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from services.order.domain import (
    CANCEL_ORDER,
    PLACE_ORDER,
    CatalogueEntry,
    LineInput,
    Order,
    OrderStatus,
    Outcome,
    SagaEvent,
    place,
)
from shopmesh.errors import FailedPrecondition, InvalidArgument

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
CATALOGUE = {
    "sku-a": CatalogueEntry("sku-a", "A", 250, "EUR"),
    "sku-b": CatalogueEntry("sku-b", "B", 1000, "EUR"),
    "sku-usd": CatalogueEntry("sku-usd", "Dollar thing", 500, "USD"),
}


def new_order(status: OrderStatus = OrderStatus.PENDING) -> Order:
    order = place("o1", "u1", "key-0001", [LineInput("sku-a", 3)], CATALOGUE, "", T0)
    order.status = status
    return order


def apply(
    order: Order, event: SagaEvent, detail: str = "why", event_id: str | None = None
) -> Outcome:
    return order.apply(event, event_id or str(uuid.uuid4()), detail, T0 + timedelta(seconds=1))


def test_place_prices_every_line_and_starts_the_timeline() -> None:
    order = place(
        "o1", "u1", "key-0001", [LineInput("sku-a", 3), LineInput("sku-b", 1)], CATALOGUE, "42", T0
    )
    assert order.status is OrderStatus.PENDING
    assert [(line.name, line.unit_price_minor, line.total_minor) for line in order.lines] == [
        ("A", 250, 750),
        ("B", 1000, 1000),
    ]
    assert (order.total_minor, order.currency, order.payment_card) == (1750, "EUR", "42")
    assert [(e.step, e.status, e.event_id) for e in order.timeline] == [
        (PLACE_ORDER, OrderStatus.PENDING, "")
    ]


def test_place_names_every_unknown_product() -> None:
    with pytest.raises(FailedPrecondition, match="unknown product sku-x, sku-y"):
        place(
            "o1",
            "u1",
            "key-0001",
            [LineInput("sku-x", 1), LineInput("sku-a", 1), LineInput("sku-y", 1)],
            CATALOGUE,
            "",
            T0,
        )


def test_place_refuses_mixed_currencies() -> None:
    with pytest.raises(FailedPrecondition, match="different currencies: EUR, USD"):
        place("o1", "u1", "k", [LineInput("sku-a", 1), LineInput("sku-usd", 1)], CATALOGUE, "", T0)


def test_place_needs_a_line() -> None:
    with pytest.raises(InvalidArgument):
        place("o1", "u1", "key-0001", [], CATALOGUE, "", T0)


def test_cancelling_a_confirmed_order_records_the_request() -> None:
    order = new_order(OrderStatus.CONFIRMED)
    order.request_cancellation("changed my mind", T0 + timedelta(seconds=5))
    assert order.status is OrderStatus.CANCELLING
    assert order.cancel_reason == "changed my mind"
    assert order.updated_at == T0 + timedelta(seconds=5)
    last = order.timeline[-1]
    assert (last.step, last.status, last.detail) == (
        CANCEL_ORDER,
        OrderStatus.CANCELLING,
        "changed my mind",
    )


def test_cancelling_without_a_reason_gives_one() -> None:
    order = new_order(OrderStatus.CONFIRMED)
    order.request_cancellation("", T0)
    assert order.cancel_reason == "cancelled by the customer"


def test_a_pending_order_cannot_be_cancelled_yet() -> None:
    order = new_order(OrderStatus.PENDING)
    with pytest.raises(FailedPrecondition, match="still being processed"):
        order.request_cancellation("", T0)
    assert order.status is OrderStatus.PENDING
    assert len(order.timeline) == 1


@pytest.mark.parametrize("status", [OrderStatus.CANCELLING, OrderStatus.CANCELLED])
def test_a_cancelled_order_cannot_be_cancelled_again(status: OrderStatus) -> None:
    order = new_order(status)
    with pytest.raises(FailedPrecondition, match=f"already {status}"):
        order.request_cancellation("", T0)
    assert order.status is status


# Every (status, event) that applies, and what it does; every other pair is ignored.
APPLIES = [
    (OrderStatus.PENDING, SagaEvent.PAYMENT_COMPLETED, OrderStatus.PENDING, Outcome.RECORDED),
    (OrderStatus.PENDING, SagaEvent.PAYMENT_FAILED, OrderStatus.CANCELLED, Outcome.CANCELLED),
    (OrderStatus.PENDING, SagaEvent.STOCK_RESERVED, OrderStatus.CONFIRMED, Outcome.CONFIRMED),
    (OrderStatus.PENDING, SagaEvent.STOCK_REJECTED, OrderStatus.PENDING, Outcome.RECORDED),
    (OrderStatus.PENDING, SagaEvent.PAYMENT_REFUNDED, OrderStatus.CANCELLED, Outcome.CANCELLED),
    (OrderStatus.CANCELLING, SagaEvent.STOCK_RELEASED, OrderStatus.CANCELLING, Outcome.RECORDED),
    (
        OrderStatus.CANCELLING,
        SagaEvent.PAYMENT_REFUNDED,
        OrderStatus.CANCELLED,
        Outcome.CANCELLED,
    ),
]
IGNORED = [
    (status, event)
    for status in OrderStatus
    for event in SagaEvent
    if not any(a[:2] == (status, event) for a in APPLIES)
]


@pytest.mark.parametrize(("before", "event", "after", "outcome"), APPLIES)
def test_events_that_apply_move_the_order_and_are_recorded(
    before: OrderStatus, event: SagaEvent, after: OrderStatus, outcome: Outcome
) -> None:
    order = new_order(before)
    assert apply(order, event, "the detail", "e-1") is outcome
    assert order.status is after
    assert order.updated_at == T0 + timedelta(seconds=1)
    last = order.timeline[-1]
    assert (last.step, last.event_id, last.status, last.detail) == (
        str(event),
        "e-1",
        after,
        "the detail",
    )


@pytest.mark.parametrize(("status", "event"), IGNORED)
def test_events_that_no_longer_apply_are_recorded_as_ignored(
    status: OrderStatus, event: SagaEvent
) -> None:
    order = new_order(status)
    assert apply(order, event, "late", "e-1") is Outcome.IGNORED
    assert (order.status, order.updated_at, order.cancel_reason) == (status, T0, "")
    last = order.timeline[-1]
    assert (last.step, last.event_id, last.status) == (str(event), "e-1", status)
    assert last.detail == f"ignored: order is {status}; late"


def test_every_state_ignores_something_and_cancelled_ignores_everything() -> None:
    assert {status for status, _ in IGNORED} == set(OrderStatus)
    assert {event for status, event in IGNORED if status is OrderStatus.CANCELLED} == set(SagaEvent)


def test_a_duplicate_event_is_not_recorded_twice() -> None:
    order = new_order()
    assert apply(order, SagaEvent.STOCK_RESERVED, event_id="e-1") is Outcome.CONFIRMED
    assert apply(order, SagaEvent.STOCK_RESERVED, event_id="e-1") is Outcome.DUPLICATE
    assert order.status is OrderStatus.CONFIRMED
    assert len(order.timeline) == 2


def test_a_decline_cancels_with_its_reason() -> None:
    order = new_order()
    apply(order, SagaEvent.PAYMENT_FAILED, "card declined")
    assert order.cancel_reason == "card declined"


def test_the_refund_of_a_rejected_order_cancels_it_with_the_refund_reason() -> None:
    order = new_order()
    apply(order, SagaEvent.PAYMENT_COMPLETED, "payment p1")
    apply(order, SagaEvent.STOCK_REJECTED, "insufficient stock for sku-a")
    assert order.status is OrderStatus.PENDING
    assert apply(order, SagaEvent.PAYMENT_REFUNDED, "stock rejected") is Outcome.CANCELLED
    assert (order.status, order.cancel_reason) == (OrderStatus.CANCELLED, "stock rejected")


def test_the_refund_of_a_cancelled_order_keeps_the_customers_reason() -> None:
    order = new_order(OrderStatus.CONFIRMED)
    order.request_cancellation("too slow", T0)
    apply(order, SagaEvent.STOCK_RELEASED)
    apply(order, SagaEvent.PAYMENT_REFUNDED, "cancelled by customer")
    assert (order.status, order.cancel_reason) == (OrderStatus.CANCELLED, "too slow")
    assert [e.status for e in order.timeline] == [
        OrderStatus.PENDING,
        OrderStatus.CANCELLING,
        OrderStatus.CANCELLING,
        OrderStatus.CANCELLED,
    ]


def test_out_of_order_confirmation_before_payment_is_kept_as_history() -> None:
    order = new_order()
    assert apply(order, SagaEvent.STOCK_RESERVED) is Outcome.CONFIRMED
    assert apply(order, SagaEvent.PAYMENT_COMPLETED) is Outcome.IGNORED
    assert order.status is OrderStatus.CONFIRMED
    assert [e.step for e in order.timeline] == [
        PLACE_ORDER,
        SagaEvent.STOCK_RESERVED,
        SagaEvent.PAYMENT_COMPLETED,
    ]
