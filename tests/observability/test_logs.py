"""The JSON log line: the same bytes `json.dumps` of its fields would give.

`shopmesh logs`, `./dev logs --trace` and anything reading var/log parse these lines;
the formatter writes them by hand because it runs for every call a service answers.
"""

from __future__ import annotations

import json
import logging
import random
import sys
from datetime import UTC, datetime
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider

from shopmesh.logs import JsonFormatter

pytestmark = pytest.mark.unit

INSTANCE = 'order-1 "é"'


def reference(record: logging.LogRecord, extra: dict[str, str] | None = None) -> str:
    """The line as `json.dumps` writes it: the format every reader relies on."""
    line: dict[str, Any] = {
        "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
        "level": record.levelname.lower(),
        "instance": INSTANCE,
        "logger": record.name,
        "msg": record.getMessage(),
        **(extra or {}),
    }
    return json.dumps(line)


def record(msg: str, *args: object, created: float | None = None) -> logging.LogRecord:
    made = logging.LogRecord("shopmesh.rpc", logging.INFO, __file__, 1, msg, args, None)
    if created is not None:
        made.created = created
    return made


@pytest.mark.parametrize(
    "text", ["plain", 'quotes " and \\ backslash', "é ü 日本 🛒", "tab\tnew\nline\x00\x1f"]
)
def test_messages_are_encoded_as_json_does(text: str) -> None:
    formatter = JsonFormatter(INSTANCE)
    made = record("%s %s %.1fms", "/shop.order.v1.OrderService/PlaceOrder", text, 1.25)
    assert formatter.format(made) == reference(made)


def test_time_stamps_round_as_datetime_does() -> None:
    formatter = JsonFormatter(INSTANCE)
    rng = random.Random(12)
    edges = (0.0, 0.0004995, 0.0005, 0.9994999, 0.9995, 0.9999995, 0.9999994)
    for n in range(20000):
        second = rng.randrange(1_600_000_000, 1_900_000_000)
        created = second + (edges[n % len(edges)] if n % 2 else rng.random())
        made = record("x", created=created)
        assert formatter.format(made) == reference(made), created


def test_level_trace_ids_and_tracebacks() -> None:
    formatter = JsonFormatter(INSTANCE)
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("call") as span:
        made = record("in a span")
        made.levelname = "WARNING"
        context = span.get_span_context()
        ids = {"trace_id": f"{context.trace_id:032x}", "span_id": f"{context.span_id:016x}"}
        assert formatter.format(made) == reference(made, ids)
    try:
        raise ValueError("boom")
    except ValueError:
        failed = record("failed")
        failed.exc_info = sys.exc_info()
    line = json.loads(formatter.format(failed))
    assert line["exc"].startswith("Traceback")
    assert "ValueError: boom" in line["exc"]
    assert list(line) == ["ts", "level", "instance", "logger", "msg", "exc"]
