"""The bus against a real nats-server: relay, idempotent consumers, retries, dead letters.

The inventory service runs in-process with its real handlers; the test plays payment
and order by publishing their events the way their relays would. The batch tests at the
end drive a `Consumer` and a `Relay` directly, with a handler of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, cast

import nats
import pytest
import sqlalchemy as sa
from google.protobuf.message import Message
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import PubAck, RawStreamMsg
from opentelemetry.sdk.trace import TracerProvider
from shop.common.v1 import common_pb2
from shop.inventory.v1 import events_pb2 as inventory_events
from shop.inventory.v1 import inventory_pb2
from shop.inventory.v1.inventory_pb2_grpc import InventoryServiceStub
from shop.order.v1 import events_pb2 as order_events
from shop.payment.v1 import events_pb2 as payment_events

from services.inventory.main import SPEC
from services.inventory.storage import UnitOfWork
from shopmesh import bus, dlq
from shopmesh import uow as platform_uow
from shopmesh.db import Database, outbox
from shopmesh.events import Subscription
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
    db = Database(f"sqlite:///{tmp_path / 'relay.db'}")
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


# Batches: a consumer of PaymentCompleted whose handler's effect is an outbox row (a
# StockRejected for the order), so "applied exactly once" is "one row per order".

CONSUMER = "test-payment-completed"


class CountingUnitOfWork(platform_uow.UnitOfWork):
    """Records, for each commit, how many events its handlers applied."""

    def __init__(self, db: Database, sizes: list[int], commit_times: list[float]) -> None:
        super().__init__(db, "test-1")
        self.sizes = sizes
        self.commit_times = commit_times
        self.applied = 0

    async def commit(self) -> None:
        await super().commit()
        self.sizes.append(self.applied)
        self.commit_times.append(time.monotonic())


class Harness:
    """The handler, its unit of work, and what they saw."""

    def __init__(self, db: Database, bad: frozenset[str] = frozenset()) -> None:
        self.db = db
        self.bad = bad  # orders whose event makes the handler raise, every time
        self.calls: Counter[str] = Counter()
        self.sizes: list[int] = []  # events applied per commit
        self.commit_times: list[float] = []

    async def handler(self, event: payment_events.PaymentCompleted, uow: Any) -> None:
        self.calls[event.order_id] += 1
        if event.order_id in self.bad:
            raise ValueError(f"bad order {event.order_id}")
        uow.emit(inventory_events.StockRejected(order_id=event.order_id, reason="test"))
        uow.applied += 1

    def unit_of_work(self) -> CountingUnitOfWork:
        return CountingUnitOfWork(self.db, self.sizes, self.commit_times)

    async def effects(self) -> Counter[str]:
        """Order id -> committed StockRejected rows for it."""
        async with self.db.reader.connect() as conn:
            payloads = (await conn.execute(sa.select(outbox.c.payload))).scalars().all()
        return Counter(inventory_events.StockRejected.FromString(p).order_id for p in payloads)

    async def wait_effects(self, count: int, timeout: float = 10) -> Counter[str]:
        give_up = time.monotonic() + timeout
        while (effects := await self.effects()).total() < count:
            assert time.monotonic() < give_up, f"{effects.total()} < {count} effects"
            await asyncio.sleep(0.02)
        return effects


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'bus.db'}")
    await database.migrate(SPEC.migrations)
    yield database
    await database.dispose()


@contextlib.asynccontextmanager
async def consuming(
    nats_srv: NatsServer, harness: Harness, settings: bus.BusSettings
) -> AsyncIterator[None]:
    """Run a Consumer of PaymentCompleted with `harness`'s handler while the block runs."""
    nc = await nats.connect(nats_srv.url)
    subscription = Subscription(CONSUMER, payment_events.PaymentCompleted, harness.handler)
    consumer = bus.Consumer(subscription, nc, nc.jetstream(), harness.unit_of_work, settings)
    task = asyncio.create_task(consumer.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await nc.close()


async def published_ahead(js: JetStreamContext, order_ids: list[str]) -> None:
    """Publish an event per order before any consumer runs: the first pull takes them all."""
    await bus.ensure_streams(js, bus.BusSettings())
    for order_id in order_ids:
        await publish(js, paid(order_id))


async def test_a_bad_message_in_a_batch_is_dead_lettered_alone(
    nats_srv: NatsServer, js: JetStreamContext, db: Database
) -> None:
    order_ids = [str(uuid.uuid4()) for _ in range(6)]
    bad = order_ids[2]
    good = [o for o in order_ids if o != bad]
    harness = Harness(db, bad=frozenset({bad}))
    await published_ahead(js, order_ids)
    settings = bus.BusSettings(max_deliver=3, backoff=(0.5,))
    async with consuming(nats_srv, harness, settings):
        effects = await harness.wait_effects(len(good))
        # Applied while the bad one still waits for its next attempts: not blocked by it.
        assert await messages(js, "DLQ", f"shop.dlq.{CONSUMER}") == []
        [letter] = await wait_for(js, "DLQ", f"shop.dlq.{CONSUMER}", 1)
        await asyncio.sleep(0.3)  # nothing more comes
        effects = await harness.effects()
    assert effects == Counter(good)  # each good one exactly once, the bad one never
    # All six went into one batch, which stopped at the bad one and rolled back; then
    # each was handled alone, in order, the bad one until it was dead-lettered.
    assert [harness.calls[o] for o in order_ids] == [2, 2, 1 + settings.max_deliver, 1, 1, 1]
    assert harness.sizes == [1] * len(good)
    assert letter.headers is not None
    assert "ValueError: bad order" in letter.headers[bus.DLQ_ERROR]
    assert payment_events.PaymentCompleted.FromString(letter.data or b"").order_id == bad


async def test_an_undecodable_message_leaves_its_batch_one_transaction(
    nats_srv: NatsServer, js: JetStreamContext, db: Database
) -> None:
    order_ids = [str(uuid.uuid4()) for _ in range(5)]
    harness = Harness(db)
    await published_ahead(js, order_ids[:2])
    await js.publish(
        "shop.payment.completed", b"\xff\xff not protobuf", headers={bus.MSG_ID: "poison-2"}
    )
    for order_id in order_ids[2:]:
        await publish(js, paid(order_id))
    async with consuming(nats_srv, harness, bus.BusSettings()):
        [letter] = await wait_for(js, "DLQ", f"shop.dlq.{CONSUMER}", 1)
        effects = await harness.wait_effects(len(order_ids))
    assert letter.headers is not None
    assert "undecodable" in letter.headers[bus.DLQ_ERROR]
    assert effects == Counter(order_ids)
    assert harness.sizes == [len(order_ids)]  # the others: one transaction, handled once
    assert set(harness.calls.values()) == {1}


async def test_under_load_a_transaction_applies_many_messages(
    nats_srv: NatsServer, js: JetStreamContext, db: Database
) -> None:
    order_ids = [str(uuid.uuid4()) for _ in range(150)]
    harness = Harness(db)
    await published_ahead(js, order_ids)
    settings = bus.BusSettings()
    async with consuming(nats_srv, harness, settings):
        effects = await harness.wait_effects(len(order_ids))
    assert effects == Counter(order_ids)
    assert sum(harness.sizes) == len(order_ids)
    # Full pulls while the backlog lasts: 64, 64, then the rest.
    assert max(harness.sizes) == settings.batch
    assert len(harness.sizes) <= 5


async def test_a_lone_message_is_handled_at_once(
    nats_srv: NatsServer, js: JetStreamContext, db: Database
) -> None:
    harness = Harness(db)
    await bus.ensure_streams(js, bus.BusSettings())
    delays: list[float] = []
    async with consuming(nats_srv, harness, bus.BusSettings(pull_wait=1.0)):
        # Idle gaps shorter and longer than a pull, so some messages find a fresh pull
        # and some one that is about to expire, or just did.
        for gap in (0.3, 1.2, 0.9, 2.1, 1.0):
            await asyncio.sleep(gap)
            sent = time.monotonic()
            await publish(js, paid(str(uuid.uuid4())))
            await harness.wait_effects(len(delays) + 1)
            delays.append(harness.commit_times[-1] - sent)
    # A batch pull that held its first message would take up to pull_wait (1 s).
    assert max(delays) < 0.4, delays


class RecordingJetStream:
    """Passes publishes to JetStream; counts how many wait for their ack at once, and
    fails the `fail_at`-th publish (its ack) as a missing stream would."""

    def __init__(self, js: JetStreamContext, fail_at: int = 0) -> None:
        self.js = js
        self.fail_at = fail_at
        self.sent = 0
        self.waiting = 0
        self.most_waiting = 0

    async def publish_async(
        self, subject: str, payload: bytes = b"", **kwargs: Any
    ) -> asyncio.Future[PubAck]:
        self.sent += 1
        if self.sent == self.fail_at:
            failed: asyncio.Future[PubAck] = asyncio.get_running_loop().create_future()
            failed.set_exception(nats.js.errors.NoStreamResponseError())
            return failed
        ack = await self.js.publish_async(subject, payload, **kwargs)
        self.waiting += 1
        self.most_waiting = max(self.most_waiting, self.waiting)
        ack.add_done_callback(self._acked)
        return ack

    def _acked(self, _: asyncio.Future[PubAck]) -> None:
        self.waiting -= 1


async def outbox_rows(db: Database, count: int) -> list[str]:
    """Commit `count` StockRejected events in one unit of work; their order ids."""
    order_ids = [str(uuid.uuid4()) for _ in range(count)]
    async with UnitOfWork(db, "inventory-1") as uow:
        for order_id in order_ids:
            uow.emit(inventory_events.StockRejected(order_id=order_id, reason="test"))
        await uow.commit()
    return order_ids


async def unpublished(db: Database) -> int:
    async with db.reader.connect() as conn:
        query = sa.select(sa.func.count()).where(outbox.c.published_at.is_(None))
        return int(await conn.scalar(query))


def rejected_orders(found: list[RawStreamMsg]) -> list[str]:
    return [inventory_events.StockRejected.FromString(m.data or b"").order_id for m in found]


async def test_the_relay_pipelines_a_batch_in_commit_order(
    js: JetStreamContext, db: Database
) -> None:
    await bus.ensure_streams(js, bus.BusSettings())
    order_ids = await outbox_rows(db, 60)
    recording = RecordingJetStream(js)
    relay = bus.Relay(db, cast(JetStreamContext, recording), asyncio.Event())
    assert await relay.publish_pending() == 60
    found = await wait_for(js, "INVENTORY", "shop.inventory.stock_rejected", 60)
    assert rejected_orders(found) == order_ids
    assert await unpublished(db) == 0
    assert recording.most_waiting > 1  # in flight together, not one ack at a time


async def test_the_relay_retries_only_what_was_not_acknowledged(
    js: JetStreamContext, db: Database
) -> None:
    await bus.ensure_streams(js, bus.BusSettings())
    order_ids = await outbox_rows(db, 10)
    relay = bus.Relay(
        db, cast(JetStreamContext, RecordingJetStream(js, fail_at=4)), asyncio.Event()
    )
    with pytest.raises(nats.js.errors.NoStreamResponseError):
        await relay.publish_pending()
    assert await unpublished(db) == 1  # the rows after it were acknowledged and marked
    assert await relay.publish_pending() == 1
    found = await wait_for(js, "INVENTORY", "shop.inventory.stock_rejected", 10)
    # Each once; the failed one late: the order guarantee across a failed publish.
    assert rejected_orders(found) == order_ids[:3] + order_ids[4:] + order_ids[3:4]
    assert await unpublished(db) == 0


async def test_each_emitted_event_keeps_the_trace_it_was_emitted_in(db: Database) -> None:
    """A batch commits many messages' events at once; each continues its own trace."""
    provider = TracerProvider()
    tracer = provider.get_tracer("test")
    emitted_in: list[str] = []
    async with UnitOfWork(db, "inventory-1") as unit:
        for order_id in ("o-1", "o-2"):
            with tracer.start_as_current_span(f"{order_id} process") as span:
                emitted_in.append(f"{span.get_span_context().trace_id:032x}")
                unit.emit(inventory_events.StockReleased(order_id=order_id))
        await unit.commit()  # outside both spans
    async with db.reader.connect() as conn:
        stored = [row.traceparent for row in await conn.execute(sa.select(outbox.c.traceparent))]
    assert [tp.split("-")[1] for tp in stored] == emitted_in
    assert emitted_in[0] != emitted_in[1]
