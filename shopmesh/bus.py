"""The event bus on NATS JetStream: outbox relay, idempotent consumers, dead letters.

Guarantees, and where each comes from:
- No event is lost: events are outbox rows committed with the state change
  (shopmesh.uow); the relay publishes them in order and marks a row only after
  JetStream acknowledged it, so a crash anywhere means a re-publish, never a loss.
- No event is applied twice: the relay sets `Nats-Msg-Id` to the event id, so JetStream
  drops a re-publish inside the stream's duplicate window; past it, the consumer's
  `processed_events` row (written in the handler's transaction) skips the duplicate.
- A message that keeps failing does not block the others: after MAX_DELIVER attempts it
  is copied to the DLQ stream with its headers, the consumer name and the last error,
  then acknowledged. `shopmesh dlq replay` publishes it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta

import nats
import sqlalchemy as sa
from google.protobuf.message import DecodeError
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, StorageType, StreamConfig
from nats.js.errors import BadRequestError
from opentelemetry import propagate, trace

from shopmesh import faults
from shopmesh.db import Database, outbox
from shopmesh.events import RetryLater, Subscription
from shopmesh.subjects import SUBJECTS
from shopmesh.uow import UnitOfWork, now

log = logging.getLogger(__name__)
tracer = trace.get_tracer("shopmesh.bus")

# Header names (see docs/saga.md).
MSG_ID = "Nats-Msg-Id"
EVENT_TYPE = "Shop-Event-Type"
TRACEPARENT = "traceparent"
DLQ_CONSUMER = "Shop-Dlq-Consumer"
DLQ_ERROR = "Shop-Dlq-Error"
DLQ_SUBJECT = "Shop-Dlq-Subject"
DLQ_STREAM = "DLQ"

PRODUCERS = sorted({subject.split(".")[1] for subject in SUBJECTS.values()})


def stream_name(service: str) -> str:
    return service.upper()


@dataclass(frozen=True)
class BusSettings:
    """Delivery settings; tests shorten them through the environment."""

    ack_wait: float = 10.0
    max_deliver: int = 5
    duplicate_window: float = 120.0
    # Redelivery delays after a failure (the last one repeats).
    backoff: tuple[float, ...] = (0.1, 0.5, 1.0, 2.0)

    @classmethod
    def from_env(cls) -> BusSettings:
        return cls(
            ack_wait=float(os.environ.get("SHOPMESH_BUS_ACK_WAIT", cls.ack_wait)),
            max_deliver=int(os.environ.get("SHOPMESH_BUS_MAX_DELIVER", cls.max_deliver)),
        )

    def delay(self, attempt: int) -> float:
        return self.backoff[min(attempt, len(self.backoff)) - 1]


async def connect(url: str, name: str) -> NATS:
    """Connect, retrying until nats-server is there; reconnect forever afterwards."""
    delay = 0.1
    while True:
        try:
            return await nats.connect(
                servers=[url],
                name=name,
                connect_timeout=2,
                reconnect_time_wait=0.5,
                max_reconnect_attempts=-1,
                error_cb=_log_connection_error,
            )
        except (OSError, nats.errors.NoServersError, TimeoutError) as error:
            log.warning("nats not reachable at %s (%s); retrying in %.1fs", url, error, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


async def _log_connection_error(error: Exception) -> None:
    # The client's default logs a traceback on every reconnect attempt.
    log.warning("nats: %s", error or type(error).__name__)


async def ensure_streams(js: JetStreamContext, settings: BusSettings) -> None:
    """Create (or update) one stream per producing service and the DLQ; idempotent."""
    configs = [
        StreamConfig(
            name=stream_name(service),
            subjects=[f"shop.{service}.>"],
            storage=StorageType.FILE,
            duplicate_window=settings.duplicate_window,
            max_age=timedelta(days=7).total_seconds(),
        )
        for service in PRODUCERS
    ]
    configs.append(StreamConfig(name=DLQ_STREAM, subjects=["shop.dlq.>"], storage=StorageType.FILE))
    for config in configs:
        try:
            await js.add_stream(config)
        except BadRequestError:  # exists with another config: bring it up to date
            await js.update_stream(config)


class Relay:
    """Publishes a service's outbox rows in order; wakes when a unit of work commits."""

    def __init__(self, db: Database, js: JetStreamContext, signal: asyncio.Event) -> None:
        self.db = db
        self.js = js
        self.signal = signal

    async def run(self) -> None:
        failures = 0
        while True:
            try:
                published = await self.publish_pending()
                failures = 0
            except (nats.errors.Error, TimeoutError, OSError) as error:
                failures += 1
                delay = min(0.1 * 2**failures, 5.0)
                log.warning("relay: publish failed (%s); retrying in %.1fs", error, delay)
                await asyncio.sleep(delay)
                continue
            if published == 0:
                # Sleep until a local commit signals, or poll now and then for rows written
                # by another instance sharing this database.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.signal.wait(), timeout=1.0)
                self.signal.clear()

    async def publish_pending(self, batch: int = 200) -> int:
        """Publish up to `batch` unpublished rows in order; the number published."""
        async with self.db.reader.connect() as conn:
            rows = (
                await conn.execute(
                    sa.select(outbox)
                    .where(outbox.c.published_at.is_(None))
                    .order_by(outbox.c.seq)
                    .limit(batch)
                )
            ).all()
        acknowledged: list[dict[str, object]] = []  # seq and ack time of each row
        try:
            for row in rows:
                # The publish span continues the trace of the request that wrote the row,
                # and its own context travels in the headers to the consumers.
                cause = propagate.extract({TRACEPARENT: row.traceparent})
                with tracer.start_as_current_span(
                    f"{row.subject} publish",
                    context=cause,
                    kind=trace.SpanKind.PRODUCER,
                    attributes={"messaging.system": "nats", "messaging.message.id": row.event_id},
                ):
                    headers = {MSG_ID: row.event_id, EVENT_TYPE: row.event_type}
                    propagate.inject(headers)
                    faults.crash_point("relay.before_publish")
                    await self.js.publish(row.subject, row.payload, timeout=5, headers=headers)
                acknowledged.append({"row_seq": row.seq, "acked_at": now()})
            faults.crash_point("relay.before_mark")
        finally:
            # One write marks every acknowledged row with the time of its ack, also when a
            # later publish failed. A write per row cost a transaction per event and,
            # under load, made the relay queue behind every other writer of the database
            # (docs/benchmarks.md). A crash before this write re-publishes the batch:
            # JetStream drops the copies (same Nats-Msg-Id), consumers skip what they did.
            if acknowledged:
                mark = (
                    sa.update(outbox)
                    .where(outbox.c.seq == sa.bindparam("row_seq"))
                    .values(published_at=sa.bindparam("acked_at"))
                )
                async with self.db.writer.begin() as conn:
                    await conn.execute(mark, acknowledged)
        return len(rows)


class Consumer:
    """Feeds one subscription's durable pull consumer to its handler, once per event."""

    def __init__(
        self,
        subscription: Subscription,
        js: JetStreamContext,
        unit_of_work: Callable[[], UnitOfWork],
        settings: BusSettings,
    ) -> None:
        self.subscription = subscription
        self.js = js
        self.unit_of_work = unit_of_work
        self.settings = settings

    async def run(self) -> None:
        sub = self.subscription
        pull = await self.js.pull_subscribe(
            sub.subject,
            durable=sub.name,
            stream=stream_name(sub.subject.split(".")[1]),
            config=ConsumerConfig(
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=self.settings.ack_wait,
                # One more than our own attempts: the last one copies to the DLQ.
                max_deliver=self.settings.max_deliver + 1,
            ),
        )
        try:
            while True:
                try:
                    # One at a time: nats-py's fetch of a batch, once it has the first
                    # message of a waiting pull, holds it until the batch fills or the
                    # timeout ends, which put up to a second on every saga hop.
                    messages = await pull.fetch(batch=1, timeout=1)
                    for message in messages:
                        await self.handle(message)
                except (TimeoutError, nats.errors.TimeoutError):
                    continue
                except (nats.errors.Error, OSError) as error:
                    # nats-server away: the client reconnects by itself; unacknowledged
                    # messages come back after ack_wait, and handlers are idempotent.
                    log.warning("%s: %s; retrying in 1s", sub.name, error)
                    await asyncio.sleep(1)
        finally:
            with contextlib.suppress(Exception):
                await pull.unsubscribe()

    async def handle(self, message: Msg) -> None:
        sub = self.subscription
        headers = message.headers or {}
        attempt = message.metadata.num_delivered
        parent = propagate.extract(headers)
        with tracer.start_as_current_span(
            f"{message.subject} process",
            context=parent,
            kind=trace.SpanKind.CONSUMER,
            attributes={"messaging.system": "nats", "messaging.consumer.group.name": sub.name},
        ):
            try:
                event = sub.event_type.FromString(message.data)
                # Lets `shopmesh trace <order-id>` find the trace that carried an order.
                trace.get_current_span().set_attribute(
                    "shop.order_id", getattr(event, "order_id", "")
                )
                event_id = event.meta.event_id  # type: ignore[attr-defined]
                async with self.unit_of_work() as uow:
                    first_time = await uow.mark_processed(sub.name, event_id)
                    if first_time:
                        faults.fail_point("consumer.handler")
                        await sub.handler(event, uow)
                    await uow.commit()
                log.info(
                    "%s: %s %s %s",
                    sub.name,
                    "handled" if first_time else "skipped duplicate",
                    sub.event_type.DESCRIPTOR.name,
                    event_id,
                )
                faults.crash_point("consumer.before_ack")
            except RetryLater as wait:
                log.info("%s: %s (attempt %d); will retry", sub.name, wait, attempt)
                await self._retry_or_dead_letter(message, attempt, f"retry later: {wait}")
                return
            except DecodeError as error:
                log.error("%s: undecodable %s: %s", sub.name, message.subject, error)
                await self.dead_letter(message, f"undecodable payload: {error}")
                return
            except Exception as error:
                log.exception("%s: handler failed on attempt %d", sub.name, attempt)
                await self._retry_or_dead_letter(
                    message, attempt, f"{type(error).__name__}: {error}"
                )
                return
        await message.ack()

    async def _retry_or_dead_letter(self, message: Msg, attempt: int, error: str) -> None:
        if attempt >= self.settings.max_deliver:
            await self.dead_letter(message, error)
        else:
            await message.nak(delay=self.settings.delay(attempt))

    async def dead_letter(self, message: Msg, error: str) -> None:
        """Copy `message` to the DLQ with why, then acknowledge it."""
        headers = dict(message.headers or {})
        original_id = headers.pop(MSG_ID, "")
        headers.update(
            {
                DLQ_CONSUMER: self.subscription.name,
                DLQ_ERROR: error[:1000],
                DLQ_SUBJECT: message.subject,
                # One dead letter per (consumer, event), however often this runs.
                MSG_ID: f"dlq:{self.subscription.name}:{original_id}",
            }
        )
        await self.js.publish(
            f"shop.dlq.{self.subscription.name}", message.data, timeout=5, headers=headers
        )
        await message.ack()
        log.error("%s: dead-lettered %s: %s", self.subscription.name, original_id, error)


async def run_bus(
    url: str,
    instance: str,
    db: Database,
    signal: asyncio.Event,
    subscriptions: Sequence[Subscription],
    unit_of_work: Callable[[], UnitOfWork],
    settings: BusSettings | None = None,
) -> None:
    """Connect, ensure the streams, then relay and consume until cancelled."""
    settings = settings or BusSettings.from_env()
    nc = await connect(url, instance)
    try:
        js = nc.jetstream()
        await ensure_streams(js, settings)
        tasks = [Relay(db, js, signal).run()]
        tasks += [Consumer(s, js, unit_of_work, settings).run() for s in subscriptions]
        await asyncio.gather(*tasks)
    finally:
        with contextlib.suppress(Exception):
            await nc.close()
