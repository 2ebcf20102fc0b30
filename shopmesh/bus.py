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

Both directions work in batches under load at no cost at low load: the relay pipelines
its publishes (`Relay`); a consumer applies what one pull returned in one transaction,
and one message at a time when one of them fails (`Consumer`; docs/saga.md, "Batches").
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

import nats
import sqlalchemy as sa
from google.protobuf.message import DecodeError
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, Header, PubAck, StorageType, StreamConfig
from nats.js.errors import BadRequestError, NotFoundError
from opentelemetry import propagate, trace
from opentelemetry.trace import Span, Status, StatusCode

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
    # A consumer's pull: at most `batch` messages, waiting up to `pull_wait` for the first.
    batch: int = 64
    pull_wait: float = 1.0

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


# Built once: the relay runs these for every batch.
_UNPUBLISHED = (
    sa.select(outbox)
    .where(outbox.c.published_at.is_(None))
    .order_by(outbox.c.seq)
    .limit(sa.bindparam("batch"))
)
_MARK = (
    sa.update(outbox)
    .where(outbox.c.seq == sa.bindparam("row_seq"))
    .values(published_at=sa.bindparam("acked_at"))
)


class Relay:
    """Publishes a service's outbox rows in order; wakes when a unit of work commits.

    A batch is pipelined: every row is written to the one connection in seq order without
    waiting for its ack, then the acks are awaited together, so a batch costs about one
    round trip instead of one per row. JetStream stores what one connection sends in the
    order it was sent, so while every publish succeeds the stream has the rows in commit
    order, as before.

    When a publish in the middle fails (an error, or no ack within ACK_TIMEOUT, say the
    connection broke), rows after it may already be stored: every acknowledged row is
    marked, the failed one and the rest are published again on the next attempt
    (`Nats-Msg-Id` drops the copies of those that did arrive). So the failed event can
    land in the stream after events committed later than it: order holds except across a
    failed publish, where an event may come late. Consumers tolerate that: an event that
    arrives before the one it follows raises RetryLater and is redelivered after a backoff.
    """

    # How long a batch's acks may take, all together.
    ACK_TIMEOUT = 5.0
    BATCH = 200

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
            if published < self.BATCH:
                # All caught up: sleep until a local commit signals (it may have already,
                # while this batch was out), or poll now and then for rows written by
                # another instance sharing this database. Querying again at once found
                # nothing almost every time and cost a read per event.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.signal.wait(), timeout=1.0)
                self.signal.clear()

    async def publish_pending(self) -> int:
        """Publish up to BATCH unpublished rows in order; the number published."""
        async with self.db.reader.connect() as conn:
            rows = (await conn.execute(_UNPUBLISHED, {"batch": self.BATCH})).all()
        acked_at: dict[int, datetime] = {}  # seq -> time of its ack, filled as acks arrive
        in_flight: list[asyncio.Future[PubAck]] = []
        failure: BaseException | None = None
        try:
            try:
                for row in rows:
                    in_flight.append(await self._send(row, acked_at))
            except (nats.errors.Error, OSError) as error:
                failure = error  # the rows sent before it still get their acks below
            if in_flight:
                _, late = await asyncio.wait(in_flight, timeout=self.ACK_TIMEOUT)
                for ack in late:
                    ack.cancel()
                errors = [a.exception() for a in in_flight if a.done() and not a.cancelled()]
                failure = failure or next((e for e in errors if e is not None), None)
                if failure is None and late:
                    failure = TimeoutError(f"{len(late)} of {len(in_flight)} publishes unacked")
            if failure is None:
                faults.crash_point("relay.before_mark")
        finally:
            # One write marks every acknowledged row with the time of its ack, also when
            # another publish failed. A write per row cost a transaction per event and,
            # under load, made the relay queue behind every other writer of the database
            # (docs/benchmarks.md). A crash before this write re-publishes the batch:
            # JetStream drops the copies (same Nats-Msg-Id), consumers skip what they did.
            if acked_at:
                async with self.db.writer.begin() as conn:
                    await conn.execute(
                        _MARK, [{"row_seq": seq, "acked_at": at} for seq, at in acked_at.items()]
                    )
        if failure is not None:
            raise failure
        return len(rows)

    async def _send(
        self, row: sa.Row[Any], acked_at: dict[int, datetime]
    ) -> asyncio.Future[PubAck]:
        """Write one row to the connection; the future of its ack."""
        # The publish span continues the trace of the request that wrote the row, and its
        # own context travels in the headers to the consumers. It ends with the ack.
        span = tracer.start_span(
            f"{row.subject} publish",
            context=propagate.extract({TRACEPARENT: row.traceparent}),
            kind=trace.SpanKind.PRODUCER,
            attributes={"messaging.system": "nats", "messaging.message.id": row.event_id},
        )
        headers = {MSG_ID: row.event_id, EVENT_TYPE: row.event_type}
        propagate.inject(headers, context=trace.set_span_in_context(span))
        try:
            faults.crash_point("relay.before_publish")
            ack = await self.js.publish_async(row.subject, row.payload, headers=headers)
        except BaseException as error:
            _end_span(span, error)
            raise
        ack.add_done_callback(partial(_on_ack, span, row.seq, acked_at))
        return ack


def _on_ack(
    span: Span, seq: int, acked_at: dict[int, datetime], ack: asyncio.Future[PubAck]
) -> None:
    if ack.cancelled():
        _end_span(span, TimeoutError("no ack"))
    elif (error := ack.exception()) is not None:
        _end_span(span, error)
    else:
        acked_at[seq] = now()
        span.end()


def _end_span(span: Span, error: BaseException) -> None:
    span.record_exception(error)
    span.set_status(Status(StatusCode.ERROR, str(error) or type(error).__name__))
    span.end()


class Consumer:
    """Feeds one subscription's durable pull consumer to its handler, a batch at a time.

    Pulling: one pull request at a time asks for up to `settings.batch` messages, with
    `no_wait` and `expires`: JetStream holds it until the first message arrives (or
    `pull_wait` ends), then answers at once with everything else already there and ends
    it. A lone message is handled as soon as it arrives, a backlog in batches. (nats-py's
    batch `fetch` falls back, when its first request ends empty, to a pull that holds the
    first message until the batch fills or the timeout ends: up to a second on a saga hop;
    measured with nats-py 2.16.)

    Applying: the messages of a pull are handled in stream order in one unit of work:
    every handler's effect and `processed_events` row commit together, and only then are
    the messages acknowledged. If any handler raises, nothing of the batch is kept and
    each message is handled again alone (`handle`), exactly as one pulled by itself: a
    bad message is retried or dead-lettered by itself, the others apply once.
    """

    # After a pull that ended at once with nothing.
    PULL_PAUSE = 0.05
    # Beyond `pull_wait`, how long to wait for the server to end a pull (lost in a reconnect).
    PULL_MARGIN = 1.0

    def __init__(
        self,
        subscription: Subscription,
        nc: NATS,
        js: JetStreamContext,
        unit_of_work: Callable[[], UnitOfWork],
        settings: BusSettings,
    ) -> None:
        self.subscription = subscription
        self.nc = nc
        self.js = js
        self.unit_of_work = unit_of_work
        self.settings = settings
        self.stream = stream_name(subscription.subject.split(".")[1])
        # Replies to pull number n come to `<inbox>.n`: data messages keep their own
        # subject, a status (the end of a pull) tells which pull it ends.
        self._inbox = nc.new_inbox()
        self._pulls = 0
        self._arrived: list[Msg] = []
        self._ended = asyncio.Event()
        self._trouble = ""  # a status that ended the current pull abnormally
        self._request = json.dumps(
            {"batch": settings.batch, "expires": int(settings.pull_wait * 1e9), "no_wait": True}
        ).encode()

    async def run(self) -> None:
        sub = self.subscription
        await self._ensure_consumer()
        replies = await self.nc.subscribe(f"{self._inbox}.*", cb=self._on_reply)
        try:
            while True:
                try:
                    messages = await self.pull()
                    if messages:
                        await self.handle_batch(messages)
                except (nats.errors.Error, OSError) as error:
                    # nats-server away: the client reconnects by itself; unacknowledged
                    # messages come back after ack_wait, and handlers are idempotent.
                    log.warning("%s: %s; retrying in 1s", sub.name, error)
                    await asyncio.sleep(1)
        finally:
            with contextlib.suppress(Exception):
                await replies.unsubscribe()

    async def _ensure_consumer(self) -> None:
        sub = self.subscription
        try:
            await self.js.consumer_info(self.stream, sub.name)
        except NotFoundError:
            await self.js.add_consumer(
                self.stream,
                ConsumerConfig(
                    name=sub.name,
                    durable_name=sub.name,
                    filter_subject=sub.subject,
                    ack_policy=AckPolicy.EXPLICIT,
                    ack_wait=self.settings.ack_wait,
                    # One more than our own attempts: the last one copies to the DLQ.
                    max_deliver=self.settings.max_deliver + 1,
                ),
            )

    async def pull(self) -> list[Msg]:
        """The next messages in stream order: waits up to `pull_wait` for the first only."""
        name = self.subscription.name
        if not self._arrived:  # (late messages of a pull given up on are ready at once)
            self._pulls += 1
            self._ended.clear()
            self._trouble = ""
            loop = asyncio.get_running_loop()
            started = loop.time()
            await self.nc.publish(
                f"$JS.API.CONSUMER.MSG.NEXT.{self.stream}.{name}",
                self._request,
                reply=f"{self._inbox}.{self._pulls}",
            )
            timeout = self.settings.pull_wait + self.PULL_MARGIN
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ended.wait(), timeout)
            if self._trouble:
                # 409 (consumer deleted, too many pulls waiting), 503 (no JetStream)...
                log.warning("%s: pull ended: %s; retrying in 1s", name, self._trouble)
                await asyncio.sleep(1)
            elif not self._arrived and loop.time() - started < self.settings.pull_wait / 2:
                # Ended at once with nothing ("408 Requests Pending": another instance's
                # pull is about to take what is there): do not spin.
                await asyncio.sleep(self.PULL_PAUSE)
        messages, self._arrived = self._arrived, []
        return messages

    async def _on_reply(self, message: Msg) -> None:
        headers = message.headers or {}
        status = headers.get(Header.STATUS)
        if status is None:  # a message of the stream
            self._arrived.append(message)
            if len(self._arrived) >= self.settings.batch:
                self._ended.set()  # a full batch: the server ends the pull without a word
        elif message.subject == f"{self._inbox}.{self._pulls}" and status != "100":
            # The end of this pull: 404/408 when drained or expired, else trouble.
            if status not in ("404", "408"):
                self._trouble = f"{status} {headers.get(Header.DESCRIPTION, '')}"
            self._ended.set()
        # else: the end of an earlier pull, given up on (or a heartbeat): nothing to do

    async def handle_batch(self, messages: Sequence[Msg]) -> None:
        """Apply `messages`, in order, in one unit of work; alone if any of them fails."""
        if len(messages) == 1:
            await self.handle(messages[0])
            return
        sub = self.subscription
        spans = [self._span(message, len(messages)) for message in messages]
        try:
            batch: list[tuple[Msg, Span, Any]] = []
            for message, span in zip(messages, spans, strict=True):
                try:
                    event = self._decode(message, span)
                except DecodeError as error:
                    # Dead-lettered before the batch's transaction: nothing to undo.
                    with trace.use_span(span, end_on_exit=True):
                        await self._undecodable(message, error)
                    continue
                batch.append((message, span, event))
            if not batch:
                return
            try:
                first_times = await self._apply_together(batch)
            except Exception as error:
                # Nothing of the batch was kept. Each message again, alone: the bad one
                # is retried or dead-lettered by itself, the others apply exactly once.
                log.info(
                    "%s: batch of %d rolled back (%s: %s); handling them one by one",
                    sub.name,
                    len(batch),
                    type(error).__name__,
                    error,
                )
                for message, span, _ in batch:
                    span.add_event("batch rolled back")
                    await self.handle(message, span)
                return
            for (_, span, event), first_time in zip(batch, first_times, strict=True):
                with trace.use_span(span):  # each line in its message's trace
                    self._log_handled(event, first_time)
            faults.crash_point("consumer.before_ack")
            for message, span, _ in batch:
                await message.ack()
                span.end()
        finally:
            for span in spans:  # cancelled, or the connection broke on the way
                if span.is_recording():
                    span.end()

    async def _apply_together(self, batch: Sequence[tuple[Msg, Span, Any]]) -> list[bool]:
        """Every handler and inbox row in one transaction; for each, was it new?"""
        sub = self.subscription
        first_times: list[bool] = []
        async with self.unit_of_work() as uow:
            for _, span, event in batch:
                # The message's span is the parent of what its handler does.
                with trace.use_span(span, set_status_on_exception=False):
                    first_time = await uow.mark_processed(sub.name, event.meta.event_id)
                    if first_time:
                        faults.fail_point("consumer.handler")
                        await sub.handler(event, uow)
                first_times.append(first_time)
            with trace.use_span(batch[-1][1]):  # the commit: in the last message's trace
                await uow.commit()
        return first_times

    def _span(self, message: Msg, batch: int = 1) -> Span:
        """A message's `process` span, child of the publish span in its headers."""
        return tracer.start_span(
            f"{message.subject} process",
            context=propagate.extract(message.headers or {}),
            kind=trace.SpanKind.CONSUMER,
            attributes={
                "messaging.system": "nats",
                "messaging.consumer.group.name": self.subscription.name,
                "messaging.batch.message_count": batch,
            },
        )

    def _decode(self, message: Msg, span: Span) -> Any:
        event = self.subscription.event_type.FromString(message.data)
        # Lets `shopmesh trace <order-id>` find the trace that carried an order.
        span.set_attribute("shop.order_id", getattr(event, "order_id", ""))
        return event

    def _log_handled(self, event: Any, first_time: bool) -> None:
        log.info(
            "%s: %s %s %s",
            self.subscription.name,
            "handled" if first_time else "skipped duplicate",
            self.subscription.event_type.DESCRIPTOR.name,
            event.meta.event_id,
        )

    async def _undecodable(self, message: Msg, error: DecodeError) -> None:
        log.error("%s: undecodable %s: %s", self.subscription.name, message.subject, error)
        await self.dead_letter(message, f"undecodable payload: {error}")

    async def handle(self, message: Msg, span: Span | None = None) -> None:
        """Apply one message in a unit of work of its own, then ack, nak or dead-letter it.

        `span`: its `process` span if already started (by a batch that rolled back)."""
        sub = self.subscription
        attempt = message.metadata.num_delivered
        with trace.use_span(span or self._span(message), end_on_exit=True) as current:
            try:
                event = self._decode(message, current)
                async with self.unit_of_work() as uow:
                    first_time = await uow.mark_processed(sub.name, event.meta.event_id)
                    if first_time:
                        faults.fail_point("consumer.handler")
                        await sub.handler(event, uow)
                    await uow.commit()
                self._log_handled(event, first_time)
                faults.crash_point("consumer.before_ack")
            except RetryLater as wait:
                log.info("%s: %s (attempt %d); will retry", sub.name, wait, attempt)
                await self._retry_or_dead_letter(message, attempt, f"retry later: {wait}")
                return
            except DecodeError as error:
                await self._undecodable(message, error)
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
        tasks += [Consumer(s, nc, js, unit_of_work, settings).run() for s in subscriptions]
        await asyncio.gather(*tasks)
    finally:
        with contextlib.suppress(Exception):
            await nc.close()
