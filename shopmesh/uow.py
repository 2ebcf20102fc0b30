"""Unit of work: one database transaction, with the events it produced in the outbox.

A handler changes state through the repositories of a unit of work and `emit`s domain
events; `commit` writes those events to the outbox table in the same transaction, so an
event exists if and only if its state change does (the relay publishes it later).
Leaving the block without `commit` rolls everything back.
"""

from __future__ import annotations

import asyncio
import uuid
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Self

import sqlalchemy as sa
from google.protobuf.message import Message
from opentelemetry import propagate, trace
from shop.common.v1.common_pb2 import EventMeta
from sqlalchemy.dialects import postgresql, sqlite

from shopmesh.db import Connection, Database, outbox, processed_events
from shopmesh.subjects import subject_of

if TYPE_CHECKING:
    from shopmesh.server import Runtime


_tracer = trace.get_tracer("shopmesh.uow")

# Built once (a statement built per call cost more than running it): the outbox insert,
# and "this consumer handled this event" on each backend, a no-op when it already had.
_INSERT_OUTBOX = sa.insert(outbox)
_MARK_PROCESSED = {
    backend: insert(processed_events).on_conflict_do_nothing()
    for backend, insert in (("postgresql", postgresql.insert), ("sqlite", sqlite.insert))
}


def now() -> datetime:
    return datetime.now(UTC)


class UnitOfWork:
    """Base class; a service's subclass opens its repositories in `open_repositories`."""

    conn: Connection

    def __init__(self, db: Database, producer: str, outbox_signal: asyncio.Event | None = None):
        self.db = db
        self.producer = producer
        self._outbox_signal = outbox_signal
        # (subject, event, traceparent of the span that emitted it)
        self._pending: list[tuple[str, Message, str]] = []
        self._transaction: AbstractAsyncContextManager[Connection] | None = None

    @classmethod
    def for_runtime(cls, runtime: Runtime) -> Self:
        """A unit of work on the instance's database that wakes its outbox relay."""
        return cls(runtime.db, runtime.config.instance, runtime.outbox_signal)

    def open_repositories(self) -> None:
        """Create the service's repositories on `self.conn`."""

    async def __aenter__(self) -> Self:
        # The writer's connection: on SQLite the process's one, taken in turn.
        self._transaction = self.db.writer.connect()
        self.conn = await self._transaction.__aenter__()
        self._pending = []
        self.open_repositories()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        transaction, self._transaction = self._transaction, None
        assert transaction is not None, "unit of work left without being entered"
        # Leaving without commit rolls back (the writer's `connect` does it).
        await transaction.__aexit__(exc_type, exc, tb)

    def emit(self, event: Message) -> str:
        """Queue `event` for the outbox; stamps its `meta` and returns the event id."""
        event_id = str(uuid.uuid4())
        meta: EventMeta = event.meta  # type: ignore[attr-defined]  # field 1 of every event
        meta.event_id = event_id
        meta.producer = self.producer
        meta.occurred_at.FromDatetime(now())
        # Its own trace, not the commit's: a consumer's batch commits many messages' events.
        self._pending.append((subject_of(event), event, current_traceparent()))
        return event_id

    async def commit(self) -> None:
        with _tracer.start_as_current_span(
            "db commit",
            attributes={
                "db.system": self.db.url.get_backend_name(),
                "outbox.events": len(self._pending),
            },
        ):
            await self._commit()

    async def _commit(self) -> None:
        if self._pending:
            await self.conn.execute(
                _INSERT_OUTBOX,
                [
                    {
                        "event_id": event.meta.event_id,  # type: ignore[attr-defined]
                        "subject": subject,
                        "event_type": event.DESCRIPTOR.full_name,
                        "payload": event.SerializeToString(deterministic=True),
                        "traceparent": traceparent,
                        "created_at": now(),
                    }
                    for subject, event, traceparent in self._pending
                ],
            )
        await self.conn.commit()
        if self._pending and self._outbox_signal is not None:
            self._outbox_signal.set()  # wake the relay instead of letting it poll
        self._pending = []

    async def lock(self, key: str) -> None:
        """Hold `key` until this unit of work ends; another unit of work locking it waits.

        For a rule over many rows (a sum, an absence) that row locks cannot hold still.
        SQLite needs nothing: its write transactions already run one at a time (BEGIN
        IMMEDIATE). PostgreSQL takes a transaction-level advisory lock on the key's hash.
        """
        if self.db.is_postgresql:
            await self.conn.execute(
                sa.text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"), {"key": key}
            )

    async def mark_processed(self, consumer: str, event_id: str) -> bool:
        """Record that `consumer` handled `event_id`; False if it already had.

        Called in the same transaction as the handler's effect, so both commit or neither.
        """
        result = await self.conn.execute(
            _MARK_PROCESSED["postgresql" if self.db.is_postgresql else "sqlite"],
            {"consumer": consumer, "event_id": event_id, "processed_at": now()},
        )
        return bool(result.rowcount)


def current_traceparent() -> str:
    """The W3C traceparent of the active span, captured with each outbox row."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent", "")
