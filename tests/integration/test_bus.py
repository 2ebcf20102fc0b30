"""The bus against a real nats-server: relay, idempotent consumers, retries, dead letters.

The inventory service runs in-process with its real handlers; the test plays payment
and order by publishing their events the way their relays would.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import pytest
from google.protobuf.message import Message
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import RawStreamMsg
from shop.common.v1 import common_pb2
from shop.inventory.v1 import events_pb2 as inventory_events
from shop.inventory.v1 import inventory_pb2
from shop.inventory.v1.inventory_pb2_grpc import InventoryServiceStub
from shop.order.v1 import events_pb2 as order_events
from shop.payment.v1 import events_pb2 as payment_events

from services.inventory.main import SPEC
from services.inventory.storage import UnitOfWork
from shopmesh import bus, dlq
from shopmesh.db import Database
from shopmesh.subjects import subject_of
from tests.support.inprocess import RunningService, running
from tests.support.natsserver import NatsServer, nats_server

pytestmark = pytest.mark.integration


@pytest.fixture
def nats_srv(tmp_path: Path) -> Iterator[NatsServer]:
    with nats_server(tmp_path / "nats") as server:
        yield server


@pytest.fixture
async def js(nats_srv: NatsServer) -> AsyncIterator[JetStreamContext]:
    nc: NATS = await nats.connect(nats_srv.url)
    yield nc.jetstream()
    await nc.close()


@pytest.fixture
async def inventory(
    tmp_path: Path, nats_srv: NatsServer, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[RunningService]:
    monkeypatch.setenv("SHOPMESH_BUS_MAX_DELIVER", "3")
    async with running(SPEC, tmp_path, nats_url=nats_srv.url) as service:
        yield service


async def publish(js: JetStreamContext, event: Message, msg_id: str | None = None) -> str:
    """Publish `event` as its producer's relay would; returns its event id."""
    meta: common_pb2.EventMeta = event.meta  # type: ignore[attr-defined]
    meta.event_id = meta.event_id or str(uuid.uuid4())
    headers = {bus.MSG_ID: msg_id or meta.event_id, bus.EVENT_TYPE: event.DESCRIPTOR.full_name}
    for _ in range(100):  # the stream appears once the service's bus has started
        try:
            await js.publish(subject_of(event), event.SerializeToString(), headers=headers)
            return meta.event_id
        except nats.js.errors.NoStreamResponseError:
            await asyncio.sleep(0.05)
    raise AssertionError("stream never appeared")


async def messages(js: JetStreamContext, stream: str, subject: str) -> list[RawStreamMsg]:
    try:
        info = await js.stream_info(stream)
    except nats.js.errors.NotFoundError:
        return []
    found: list[RawStreamMsg] = []
    if not info.state.messages:
        return found
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        with_seq = await js.get_msg(stream, seq)
        if with_seq.subject == subject:
            found.append(with_seq)
    return found


async def wait_for(
    js: JetStreamContext, stream: str, subject: str, count: int
) -> list[RawStreamMsg]:
    for _ in range(200):
        found = await messages(js, stream, subject)
        if len(found) >= count:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"{subject}: {len(await messages(js, stream, subject))} < {count}")


def paid(order_id: str, quantity: int = 2) -> payment_events.PaymentCompleted:
    return payment_events.PaymentCompleted(
        payment_id=str(uuid.uuid4()),
        order_id=order_id,
        user_id=str(uuid.uuid4()),
        amount=common_pb2.Money(amount_minor=1600 * quantity, currency="EUR"),
        items=[common_pb2.LineItem(product_id="sku-mug", quantity=quantity)],
    )


async def mug(inventory: RunningService) -> inventory_pb2.Product:
    stub = InventoryServiceStub(inventory.channel)
    reply = await stub.GetProduct(inventory_pb2.GetProductRequest(product_id="sku-mug"))
    product: inventory_pb2.Product = reply.product
    return product


async def test_an_event_is_handled_and_the_next_one_relayed(
    inventory: RunningService, js: JetStreamContext
) -> None:
    before = await mug(inventory)
    order_id = str(uuid.uuid4())
    await publish(js, paid(order_id))

    [reserved] = await wait_for(js, "INVENTORY", "shop.inventory.stock_reserved", 1)
    event = inventory_events.StockReserved.FromString(reserved.data or b"")
    assert event.order_id == order_id
    assert reserved.headers is not None
    assert reserved.headers[bus.MSG_ID] == event.meta.event_id
    assert reserved.headers[bus.EVENT_TYPE] == "shop.inventory.v1.StockReserved"
    assert event.meta.producer == "inventory-1"
    after = await mug(inventory)
    assert (after.available, after.reserved) == (before.available - 2, before.reserved + 2)


async def test_a_duplicated_event_is_applied_once(
    inventory: RunningService, js: JetStreamContext
) -> None:
    before = await mug(inventory)
    event = paid(str(uuid.uuid4()))
    event_id = await publish(js, event)
    # The same event again, past JetStream's duplicate window (a new message id).
    await publish(js, event, msg_id=f"{event_id}-again")
    await wait_for(js, "INVENTORY", "shop.inventory.stock_reserved", 1)
    await asyncio.sleep(0.5)
    assert len(await messages(js, "INVENTORY", "shop.inventory.stock_reserved")) == 1
    assert (await mug(inventory)).reserved == before.reserved + 2


async def test_an_early_event_is_retried_until_it_applies(
    inventory: RunningService, js: JetStreamContext
) -> None:
    order_id = str(uuid.uuid4())
    # The cancellation arrives before the payment it follows.
    await publish(js, order_events.OrderCancellationRequested(order_id=order_id, reason="x"))
    await asyncio.sleep(0.3)
    await publish(js, paid(order_id))
    [released] = await wait_for(js, "INVENTORY", "shop.inventory.stock_released", 1)
    assert inventory_events.StockReleased.FromString(released.data or b"").order_id == order_id


async def test_a_poison_message_lands_in_the_dlq(
    inventory: RunningService, js: JetStreamContext
) -> None:
    await publish(js, paid(str(uuid.uuid4())))  # make sure the stream exists
    await js.publish(
        "shop.payment.completed",
        b"\xff\xff not protobuf",
        headers={bus.MSG_ID: "poison-1", bus.EVENT_TYPE: "shop.payment.v1.PaymentCompleted"},
    )
    [letter] = await wait_for(js, "DLQ", "shop.dlq.inventory-payment-completed", 1)
    assert letter.headers is not None
    assert letter.headers[bus.DLQ_CONSUMER] == "inventory-payment-completed"
    assert letter.headers[bus.DLQ_SUBJECT] == "shop.payment.completed"
    assert "undecodable" in letter.headers[bus.DLQ_ERROR]
    assert letter.headers[bus.EVENT_TYPE] == "shop.payment.v1.PaymentCompleted"


async def test_a_failing_event_is_dead_lettered_after_max_deliver(
    inventory: RunningService, js: JetStreamContext
) -> None:
    # A release for an order never reserved keeps asking to be retried.
    order_id = str(uuid.uuid4())
    await publish(js, order_events.OrderCancellationRequested(order_id=order_id))
    [letter] = await wait_for(js, "DLQ", "shop.dlq.inventory-cancellation-requested", 1)
    assert letter.headers is not None
    assert "retry later" in letter.headers[bus.DLQ_ERROR]


async def test_the_relay_catches_up_after_nats_was_away(
    tmp_path: Path, nats_srv: NatsServer
) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'relay.db'}")
    await db.migrate(SPEC.migrations)
    nats_srv.stop()
    signal = asyncio.Event()
    relay_task = asyncio.create_task(
        bus.run_bus(nats_srv.url, "inventory-1", db, signal, [], lambda: UnitOfWork(db, "x"))
    )
    order_ids = [str(uuid.uuid4()) for _ in range(3)]
    for order_id in order_ids:
        async with UnitOfWork(db, "inventory-1", signal) as uow:
            uow.emit(inventory_events.StockRejected(order_id=order_id, reason="test"))
            await uow.commit()
    await asyncio.sleep(0.5)
    nats_srv.start()
    nc = await nats.connect(nats_srv.url)
    try:
        found = await wait_for(nc.jetstream(), "INVENTORY", "shop.inventory.stock_rejected", 3)
        # In commit order.
        assert [
            inventory_events.StockRejected.FromString(m.data or b"").order_id for m in found
        ] == order_ids
    finally:
        await nc.close()
        relay_task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await relay_task
        await db.dispose()


async def test_a_dead_letter_replayed_after_the_fix_completes(
    inventory: RunningService, js: JetStreamContext
) -> None:
    order_id = str(uuid.uuid4())
    # The release comes so early that it runs out of attempts: dead-lettered.
    await publish(js, order_events.OrderCancellationRequested(order_id=order_id))
    await wait_for(js, "DLQ", "shop.dlq.inventory-cancellation-requested", 1)
    [letter] = [letter for letter in await dlq.list_letters(js) if order_id in letter.event_json()]
    assert letter.consumer == "inventory-cancellation-requested"
    # The cause goes away (the payment arrives and stock is reserved), then replay.
    await publish(js, paid(order_id))
    await wait_for(js, "INVENTORY", "shop.inventory.stock_reserved", 1)
    await dlq.replay(js, letter.seq)
    released = await wait_for(js, "INVENTORY", "shop.inventory.stock_released", 1)
    assert [
        inventory_events.StockReleased.FromString(m.data or b"").order_id for m in released
    ] == [order_id]
    assert await dlq.get_letter(js, letter.seq) is None
