"""Structured logs: one JSON object per line on stderr, the same in every service.

Every call a service answers writes a line (shopmesh.rpc), so the formatter is on the
hot path: it writes the line itself rather than building a dict for `json.dumps`, and
formats the time stamp's date and time once per second. The lines are the same as
`json.dumps` of {ts, level, instance, logger, msg[, trace_id, span_id][, exc]} would give.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time

from opentelemetry import trace


class JsonFormatter(logging.Formatter):
    def __init__(self, instance: str) -> None:
        super().__init__()
        self.instance = instance
        self._instance = json.dumps(instance)
        self._second = -1
        self._second_text = ""
        # Levels and logger names, JSON-encoded: there are few of them.
        self._encoded: dict[str, str] = {}

    def _json(self, text: str) -> str:
        encoded = self._encoded.get(text)
        if encoded is None:
            encoded = self._encoded[text] = json.dumps(text)
        return encoded

    def _ts(self, created: float) -> str:
        """ISO 8601 in UTC to the millisecond, as datetime.isoformat gives it."""
        # Rounded to the microsecond first, exactly as datetime.fromtimestamp does.
        fraction, whole = math.modf(created)
        second, micro = int(whole), round(fraction * 1_000_000)
        if micro >= 1_000_000:
            second, micro = second + 1, micro - 1_000_000
        if second != self._second:
            self._second = second
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._second_text}.{micro // 1000:03d}+00:00"

    def format(self, record: logging.LogRecord) -> str:
        line = (
            f'{{"ts": "{self._ts(record.created)}", '
            f'"level": {self._json(record.levelname.lower())}, '
            f'"instance": {self._instance}, '
            f'"logger": {self._json(record.name)}, '
            f'"msg": {json.dumps(record.getMessage())}'
        )
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            line += f', "trace_id": "{span.trace_id:032x}", "span_id": "{span.span_id:016x}"'
        if record.exc_info:
            line += f', "exc": {json.dumps(self.formatException(record.exc_info))}'
        return line + "}"


def configure(instance: str, level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(instance))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    # The formatter writes none of these: skip looking them up for every record.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    for noisy in ("sqlalchemy", "alembic", "aiosqlite", "nats"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
