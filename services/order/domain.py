"""Order's rules: pricing an order, cancelling it, and the saga's state machine.

Every step that reaches an order is written to its timeline, even one that changes
nothing, so the timeline tells the whole story. Plain Python: no gRPC, no SQL.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum, StrEnum

from shopmesh.errors import FailedPrecondition, InvalidArgument

PLACE_ORDER = "PlaceOrder"
CANCEL_ORDER = "CancelOrder"


class OrderStatus(StrEnum):
    PENDING = "pending"
    CONFIRMED = "confirmed"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"


class SagaEvent(StrEnum):
    """The events order consumes, named by their full protobuf type (the timeline step)."""

    PAYMENT_COMPLETED = "shop.payment.v1.PaymentCompleted"
    PAYMENT_FAILED = "shop.payment.v1.PaymentFailed"
    PAYMENT_REFUNDED = "shop.payment.v1.PaymentRefunded"
    STOCK_RESERVED = "shop.inventory.v1.StockReserved"
    STOCK_REJECTED = "shop.inventory.v1.StockRejected"
    STOCK_RELEASED = "shop.inventory.v1.StockReleased"


class Outcome(Enum):
    """What applying a saga event did to an order."""

    DUPLICATE = "duplicate"  # this event id is already in the timeline: nothing recorded
    IGNORED = "ignored"  # recorded as ignored; the order is unchanged
    RECORDED = "recorded"  # recorded; the status is unchanged
    CONFIRMED = "confirmed"  # the order became CONFIRMED
    CANCELLED = "cancelled"  # the order became CANCELLED


# status -> event -> (status after, outcome) for every event that applies; any other
# combination no longer applies (a late copy, or the order has moved on) and is ignored.
_TRANSITIONS: dict[OrderStatus, dict[SagaEvent, tuple[OrderStatus, Outcome]]] = {
    OrderStatus.PENDING: {
        SagaEvent.PAYMENT_COMPLETED: (OrderStatus.PENDING, Outcome.RECORDED),
        SagaEvent.PAYMENT_FAILED: (OrderStatus.CANCELLED, Outcome.CANCELLED),
        SagaEvent.STOCK_RESERVED: (OrderStatus.CONFIRMED, Outcome.CONFIRMED),
        # The refund follows; it is what cancels the order.
        SagaEvent.STOCK_REJECTED: (OrderStatus.PENDING, Outcome.RECORDED),
        SagaEvent.PAYMENT_REFUNDED: (OrderStatus.CANCELLED, Outcome.CANCELLED),
    },
    OrderStatus.CANCELLING: {
        SagaEvent.STOCK_RELEASED: (OrderStatus.CANCELLING, Outcome.RECORDED),
        SagaEvent.PAYMENT_REFUNDED: (OrderStatus.CANCELLED, Outcome.CANCELLED),
    },
}


@dataclass(frozen=True)
class CatalogueEntry:
    """A product as inventory prices it."""

    product_id: str
    name: str
    price_minor: int
    currency: str


@dataclass(frozen=True)
class LineInput:
    product_id: str
    quantity: int


@dataclass(frozen=True)
class OrderLine:
    product_id: str
    name: str
    quantity: int
    unit_price_minor: int

    @property
    def total_minor(self) -> int:
        return self.unit_price_minor * self.quantity


@dataclass(frozen=True)
class TimelineEntry:
    at: datetime
    step: str
    status: OrderStatus
    detail: str = ""
    event_id: str = ""


@dataclass
class Order:
    order_id: str
    user_id: str
    idempotency_key: str
    status: OrderStatus
    lines: list[OrderLine]
    currency: str
    payment_card: str
    created_at: datetime
    updated_at: datetime
    cancel_reason: str = ""
    timeline: list[TimelineEntry] = field(default_factory=list)

    @property
    def total_minor(self) -> int:
        return sum(line.total_minor for line in self.lines)

    def request_cancellation(self, reason: str, at: datetime) -> None:
        """The customer cancels: only a CONFIRMED order, which then becomes CANCELLING."""
        if self.status is OrderStatus.PENDING:
            raise FailedPrecondition(
                f"order {self.order_id} is still being processed; retry once its saga has ended"
            )
        if self.status is not OrderStatus.CONFIRMED:
            raise FailedPrecondition(f"order {self.order_id} is already {self.status}")
        self.cancel_reason = reason or "cancelled by the customer"
        self._record(CANCEL_ORDER, OrderStatus.CANCELLING, at, detail=self.cancel_reason)

    def apply(self, event: SagaEvent, event_id: str, detail: str, at: datetime) -> Outcome:
        """Apply one saga event; the timeline records it whatever it does.

        `detail` describes the event; when the event cancels a PENDING order it is also
        the cancel reason (the decline or refund reason).
        """
        if event_id and any(entry.event_id == event_id for entry in self.timeline):
            return Outcome.DUPLICATE
        status, outcome = _TRANSITIONS.get(self.status, {}).get(
            event, (self.status, Outcome.IGNORED)
        )
        if outcome is Outcome.IGNORED:
            # The step is history now, but the order does not change (nor its updated_at).
            ignored = f"ignored: order is {self.status}" + (f"; {detail}" if detail else "")
            self.timeline.append(TimelineEntry(at, event, status, ignored, event_id))
            return outcome
        if outcome is Outcome.CANCELLED and self.status is OrderStatus.PENDING:
            self.cancel_reason = detail or "payment failed"
        self._record(event, status, at, detail, event_id)
        return outcome

    def _record(
        self, step: str, status: OrderStatus, at: datetime, detail: str = "", event_id: str = ""
    ) -> None:
        self.status = status
        self.updated_at = at
        self.timeline.append(TimelineEntry(at, step, status, detail, event_id))


def price_lines(
    lines: Sequence[LineInput], catalogue: Mapping[str, CatalogueEntry]
) -> tuple[list[OrderLine], str]:
    """The priced lines and their one currency; FailedPrecondition for an unknown product
    or a mix of currencies (a total must be in one currency)."""
    if not lines:
        raise InvalidArgument("an order needs at least one line")
    unknown = [line.product_id for line in lines if line.product_id not in catalogue]
    if unknown:
        raise FailedPrecondition("unknown product " + ", ".join(unknown))
    currencies = sorted({catalogue[line.product_id].currency for line in lines})
    if len(currencies) != 1:
        raise FailedPrecondition(
            "the products are priced in different currencies: " + ", ".join(currencies)
        )
    priced = [
        OrderLine(
            product_id=line.product_id,
            name=catalogue[line.product_id].name,
            quantity=line.quantity,
            unit_price_minor=catalogue[line.product_id].price_minor,
        )
        for line in lines
    ]
    return priced, currencies[0]


def place(
    order_id: str,
    user_id: str,
    idempotency_key: str,
    lines: Sequence[LineInput],
    catalogue: Mapping[str, CatalogueEntry],
    payment_card: str,
    at: datetime,
) -> Order:
    """A new PENDING order with its priced lines; the first step of its timeline."""
    priced, currency = price_lines(lines, catalogue)
    order = Order(
        order_id=order_id,
        user_id=user_id,
        idempotency_key=idempotency_key,
        status=OrderStatus.PENDING,
        lines=priced,
        currency=currency,
        payment_card=payment_card,
        created_at=at,
        updated_at=at,
    )
    order.timeline.append(TimelineEntry(at, PLACE_ORDER, OrderStatus.PENDING))
    return order
