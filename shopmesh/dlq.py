"""Dead letters: list, show and replay messages the consumers gave up on.

A dead letter is the original message (body and headers) on `shop.dlq.<consumer>` in
the DLQ stream, plus the consumer's name, the last error and the original subject
(shopmesh.bus.Consumer.dead_letter). Replaying publishes the body to its original
subject again; consumers that handled it already skip it (processed_events), the one
that failed gets another go. A replayed letter is removed from the DLQ.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from google.protobuf import json_format
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from shopmesh import bus
from shopmesh.subjects import EVENT_TYPES


@dataclass(frozen=True)
class DeadLetter:
    seq: int
    consumer: str
    subject: str
    event_type: str
    error: str
    time: datetime | None
    headers: dict[str, str]
    data: bytes

    def event_json(self) -> str:
        """The event decoded from its type header, or why it cannot be."""
        event_class = EVENT_TYPES.get(self.event_type)
        if event_class is None:
            return f"(unknown event type {self.event_type!r}, {len(self.data)} bytes)"
        try:
            return json_format.MessageToJson(event_class.FromString(self.data))
        except Exception as error:  # a poison message is exactly this case
            return f"(undecodable {self.event_type}: {error})"


async def list_letters(js: JetStreamContext) -> list[DeadLetter]:
    try:
        info = await js.stream_info(bus.DLQ_STREAM)
    except NotFoundError:
        return []
    letters: list[DeadLetter] = []
    if not info.state.messages:
        return letters
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        letter = await get_letter(js, seq)
        if letter is not None:
            letters.append(letter)
    return letters


async def get_letter(js: JetStreamContext, seq: int) -> DeadLetter | None:
    try:
        raw = await js.get_msg(bus.DLQ_STREAM, seq)
    except NotFoundError:
        return None  # replayed (deleted) or never there
    headers = dict(raw.headers or {})
    return DeadLetter(
        seq=seq,
        consumer=headers.get(bus.DLQ_CONSUMER, "?"),
        subject=headers.get(bus.DLQ_SUBJECT, "?"),
        event_type=headers.get(bus.EVENT_TYPE, "?"),
        error=headers.get(bus.DLQ_ERROR, ""),
        time=raw.time,
        headers=headers,
        data=raw.data or b"",
    )


async def replay(js: JetStreamContext, seq: int) -> DeadLetter:
    """Publish dead letter `seq` to its original subject again, then delete it."""
    letter = await get_letter(js, seq)
    if letter is None:
        raise LookupError(f"no dead letter {seq}")
    headers = {
        key: value
        for key, value in letter.headers.items()
        if key not in (bus.DLQ_CONSUMER, bus.DLQ_ERROR, bus.DLQ_SUBJECT, bus.MSG_ID)
    }
    # A fresh message id: the original one is inside JetStream's duplicate window or long
    # gone; consumers recognise the event by the id inside it, not by this header.
    headers[bus.MSG_ID] = f"replay:{seq}:{letter.headers.get(bus.MSG_ID, '')}"
    await js.publish(letter.subject, letter.data, timeout=5, headers=headers)
    await js.delete_msg(bus.DLQ_STREAM, seq)
    return letter
