"""What the saga did, read back from the services' own SQLite files (read-only).

- When an order was placed: the client's send time, which the load generator writes into
  the idempotency key (`bench-<run>-<step>-<unix ns>-<n>`), so nothing is matched up
  afterwards and no clock but the host's is involved.
- When it was confirmed: the `at` of the order's timeline entry that made it CONFIRMED
  (stamped in the transaction that commits it).
- Relay lag: each outbox row's `created_at` (stamped as its transaction commits) to
  `published_at` (stamped once JetStream acknowledged the publish).
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

OUTBOX_SERVICES = ("order", "payment", "inventory", "notification", "user")
FINAL = ("confirmed", "cancelled")


@dataclass(frozen=True)
class PlacedOrder:
    sent_at: float  # unix seconds, client side
    status: str
    confirmed_at: float | None  # unix seconds

    @property
    def seconds_to_confirm(self) -> float | None:
        return None if self.confirmed_at is None else self.confirmed_at - self.sent_at


def _unix(text: str | None) -> float | None:
    """SQLAlchemy stores these as naive UTC text ('2026-11-26 15:09:23.950223')."""
    if text is None:
        return None
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


@contextmanager
def _open(db: Path) -> Iterator[sqlite3.Connection]:
    # Read-only: the services own these files and are still writing them (WAL).
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)) as conn:
        yield conn


def key_prefix(run_id: str, step: str) -> str:
    return f"bench-{run_id}-{step}-"


def orders(data_dir: Path, prefix: str) -> list[PlacedOrder]:
    """The orders whose idempotency key starts with ``prefix``."""
    query = """
        SELECT o.idempotency_key, o.status,
               (SELECT min(t.at) FROM order_timeline t
                 WHERE t.order_id = o.order_id AND t.status = 'confirmed')
          FROM orders o
         WHERE o.idempotency_key LIKE ?
    """
    with _open(data_dir / "order.db") as conn:
        rows = conn.execute(query, (prefix + "%",)).fetchall()
    out = []
    for key, status, confirmed in rows:
        sent_ns = int(key.removeprefix(prefix).split("-")[0])
        out.append(PlacedOrder(sent_ns / 1e9, status, _unix(confirmed)))
    return out


def unsettled(data_dir: Path, prefix: str) -> int:
    with _open(data_dir / "order.db") as conn:
        (count,) = conn.execute(
            "SELECT count(*) FROM orders WHERE idempotency_key LIKE ? AND status NOT IN (?, ?)",
            (prefix + "%", *FINAL),
        ).fetchone()
    return int(count)


@dataclass(frozen=True)
class RelayRows:
    lags_ms: list[float]
    unpublished: int


def relay_lags(data_dir: Path, start: float, end: float) -> dict[str, RelayRows]:
    """Per service, the outbox rows created in [start, end) (unix seconds)."""
    low = datetime.fromtimestamp(start, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    high = datetime.fromtimestamp(end, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    out = {}
    for service in OUTBOX_SERVICES:
        db = data_dir / f"{service}.db"
        if not db.exists():
            continue
        with _open(db) as conn:
            rows = conn.execute(
                "SELECT created_at, published_at FROM outbox"
                " WHERE created_at >= ? AND created_at < ?",
                (low, high),
            ).fetchall()
        lags = []
        unpublished = 0
        for created, published in rows:
            created_s, published_s = _unix(created), _unix(published)
            if created_s is None or published_s is None:
                unpublished += 1
            else:
                lags.append((published_s - created_s) * 1000)
        out[service] = RelayRows(lags, unpublished)
    return out


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile; nan for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]
