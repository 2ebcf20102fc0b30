"""Domain events on the bus: their subjects, and how a service subscribes handlers.

Subjects are `shop.<producing service>.<event>`, one JetStream stream per producing
service. A handler is a plain async function of (event, unit of work): the bus opens the
unit of work, records the event id in `processed_events`, calls the handler and commits,
so the handler's effect and "this event was handled" are one transaction.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message

from shopmesh.subjects import SUBJECTS


class RetryLater(Exception):
    """The event arrived before what it depends on (out of order): redeliver it later.

    Raised by a handler; the bus rolls back, and JetStream redelivers after a delay.
    """


# (event message, the service's own UnitOfWork subclass)
EventHandler = Callable[[Any, Any], Awaitable[None]]


@dataclass(frozen=True)
class Subscription:
    """`handler` receives every `event_type` event; `name` names its durable consumer."""

    name: str
    event_type: type[Message]
    handler: EventHandler

    @property
    def subject(self) -> str:
        return SUBJECTS[self.event_type]
