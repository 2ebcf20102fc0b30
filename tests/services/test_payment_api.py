"""Payment's gRPC API over a real channel, with a real database.

Payments are taken by the saga, not the API, so each test writes them with the real
event handler on the running service's own database file.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message
from shop.common.v1 import common_pb2
from shop.inventory.v1 import events_pb2 as inventory_events
from shop.order.v1 import events_pb2 as order_events
from shop.payment.v1 import payment_pb2 as pb
from shop.payment.v1.payment_pb2_grpc import PaymentServiceStub

from services.payment import events
from services.payment.domain import TEST_DECLINED_CARD, FakeProvider
from services.payment.main import SPEC
from services.payment.storage import UnitOfWork
from shopmesh.db import Database
from shopmesh.uow import now
from tests.support.errors import field_violations
from tests.support.inprocess import RunningService, as_user, running

pytestmark = pytest.mark.integration

Handler = Callable[[Any, UnitOfWork, FakeProvider], Awaitable[None]]


def new_id() -> str:
    return str(uuid.uuid4())


@pytest.fixture
async def payment(tmp_path: Path) -> AsyncIterator[RunningService]:
    async with running(SPEC, tmp_path, instance="payment-2") as service:
        yield service


@pytest.fixture
def stub(payment: RunningService) -> PaymentServiceStub:
    return PaymentServiceStub(payment.channel)


async def handle(service: RunningService, handler: Handler, event: Message) -> None:
    """Run a saga handler on the service's own database, as its bus would."""
    db = Database(service.config.db_url)
    try:
        uow = UnitOfWork(db, service.config.instance)
        async with uow:
            await handler(event, uow, FakeProvider())
            await uow.commit()
    finally:
        await db.dispose()


async def charge(
    service: RunningService, user_id: str, amount_minor: int = 4500, card: str = ""
) -> str:
    """Take a payment for a new order of `user_id`; its order id."""
    event = order_events.OrderCreated(
        order_id=new_id(),
        user_id=user_id,
        items=[common_pb2.LineItem(product_id="sku-mug", quantity=1)],
        total=common_pb2.Money(amount_minor=amount_minor, currency="EUR"),
        payment_card=card,
    )
    await handle(service, events.on_order_created, event)
    return event.order_id


async def only_payment(stub: PaymentServiceStub, order_id: str, user_id: str) -> pb.Payment:
    reply: pb.ListPaymentsResponse = await stub.ListPayments(
        pb.ListPaymentsRequest(order_id=order_id), metadata=as_user(user_id)
    )
    [payment] = reply.payments
    return payment


async def test_get_payment_returns_the_callers_payment(
    payment: RunningService, stub: PaymentServiceStub
) -> None:
    user = new_id()
    before = now()
    order_id = await charge(payment, user, 4500)
    listed = await only_payment(stub, order_id, user)

    reply = await stub.GetPayment(
        pb.GetPaymentRequest(payment_id=listed.payment_id), metadata=as_user(user)
    )
    got = reply.payment
    assert got == listed
    assert (got.order_id, got.user_id) == (order_id, user)
    assert (got.amount.amount_minor, got.amount.currency) == (4500, "EUR")
    assert got.status == pb.PAYMENT_STATUS_COMPLETED
    assert got.reason == ""
    assert got.processed_by == "payment-2"
    assert got.created_at.ToDatetime(tzinfo=UTC) >= before
    assert got.updated_at == got.created_at


async def test_a_declined_payment_shows_failed_with_its_reason(
    payment: RunningService, stub: PaymentServiceStub
) -> None:
    user = new_id()
    order_id = await charge(payment, user, card=TEST_DECLINED_CARD)
    got = await only_payment(stub, order_id, user)
    assert (got.status, got.reason) == (pb.PAYMENT_STATUS_FAILED, "card declined")


async def test_a_refunded_payment_shows_refunded_with_its_reason(
    payment: RunningService, stub: PaymentServiceStub
) -> None:
    user = new_id()
    order_id = await charge(payment, user)
    await handle(
        payment, events.on_stock_released, inventory_events.StockReleased(order_id=order_id)
    )
    got = await only_payment(stub, order_id, user)
    assert (got.status, got.reason) == (pb.PAYMENT_STATUS_REFUNDED, "order cancelled")
    assert got.updated_at.ToDatetime() > got.created_at.ToDatetime()


async def test_another_users_payment_is_not_found(
    payment: RunningService, stub: PaymentServiceStub
) -> None:
    owner = new_id()
    order_id = await charge(payment, owner)
    payment_id = (await only_payment(stub, order_id, owner)).payment_id
    for request in (
        pb.GetPaymentRequest(payment_id=payment_id),
        pb.GetPaymentRequest(payment_id=new_id()),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.GetPayment(request, metadata=as_user(new_id()))
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    # And another user's list of that order is empty rather than an error.
    reply = await stub.ListPayments(
        pb.ListPaymentsRequest(order_id=order_id), metadata=as_user(new_id())
    )
    assert list(reply.payments) == []


async def test_admins_and_services_read_any_payment(
    payment: RunningService, stub: PaymentServiceStub
) -> None:
    owner = new_id()
    order_id = await charge(payment, owner)
    payment_id = (await only_payment(stub, order_id, owner)).payment_id
    for role in ("admin", "service"):
        metadata = as_user(new_id(), role)
        reply = await stub.GetPayment(
            pb.GetPaymentRequest(payment_id=payment_id), metadata=metadata
        )
        assert reply.payment.user_id == owner
        listed = await stub.ListPayments(
            pb.ListPaymentsRequest(order_id=order_id), metadata=metadata
        )
        assert [p.payment_id for p in listed.payments] == [payment_id]


async def test_an_order_without_payments_lists_none(stub: PaymentServiceStub) -> None:
    reply = await stub.ListPayments(
        pb.ListPaymentsRequest(order_id=new_id()), metadata=as_user(new_id())
    )
    assert list(reply.payments) == []


async def test_lists_only_the_orders_own_payments(
    payment: RunningService, stub: PaymentServiceStub
) -> None:
    user = new_id()
    first, second = await charge(payment, user, 100), await charge(payment, user, 200)
    assert (await only_payment(stub, first, user)).amount.amount_minor == 100
    assert (await only_payment(stub, second, user)).amount.amount_minor == 200


async def test_calls_without_an_identity_are_unauthenticated(stub: PaymentServiceStub) -> None:
    for call in (
        stub.GetPayment(pb.GetPaymentRequest(payment_id=new_id())),
        stub.ListPayments(pb.ListPaymentsRequest(order_id=new_id())),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call
        assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_ids_that_are_not_uuids_are_invalid_arguments(stub: PaymentServiceStub) -> None:
    user = as_user(new_id())
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.GetPayment(pb.GetPaymentRequest(payment_id="nope"), metadata=user)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(raised.value)) == {"payment_id"}
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ListPayments(pb.ListPaymentsRequest(), metadata=user)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(raised.value)) == {"order_id"}


async def test_payments_survive_a_restart(tmp_path: Path) -> None:
    user = new_id()
    async with running(SPEC, tmp_path) as first:
        order_id = await charge(first, user, 777)
        before = await only_payment(PaymentServiceStub(first.channel), order_id, user)
    async with running(SPEC, tmp_path) as second:
        after = await only_payment(PaymentServiceStub(second.channel), order_id, user)
    assert after == before
    assert after.amount.amount_minor == 777
