"""Saga throughput: orders placed through the gateway, counted once CONFIRMED.

ghz places the orders (PlaceOrder through the gateway, with real customers' tokens taken
in turn) at a fixed offered rate, then at rising rates until the mesh no longer keeps up.
After each step the bench waits (bounded) for every order of the step to end, then reads
the services' own databases (bench.sagadata). At the end the consistency checker of the
saga tests (tests/support/shop.py) compares money, stock and notifications.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from shop.user.v1 import user_pb2, user_pb2_grpc

from bench import ghz, sagadata
from bench.mesh import BenchMesh
from bench.progress import Tracker
from services.user.tokens import ensure_signing_key, issue_token, keys_dir
from tests.support import shop
from tests.support.mesh import app_addresses

CALL = "shop.order.v1.OrderService/PlaceOrder"
PRODUCT = "sku-filter"
PASSWORD = "correct horse battery"
NO_PROXY = [("grpc.enable_http_proxy", 0)]
MAX_STOCK_STEP = 100_000  # AdjustStock's largest delta


@dataclass(frozen=True)
class Customer:
    user_id: str
    email: str
    token: str


@dataclass(frozen=True)
class Plan:
    fixed_rate: float  # orders/s offered in the fixed step
    fixed_seconds: float
    ramp: tuple[float, ...]  # rising offered rates after it, until one is not sustained
    ramp_seconds: float
    settle_seconds: float  # the longest wait for a step's orders to end
    customers: int

    def most_orders(self) -> int:
        return round(self.fixed_rate * self.fixed_seconds + sum(self.ramp) * self.ramp_seconds)


def register(mesh: BenchMesh, count: int) -> list[Customer]:
    """Customers signed up and logged in through the gateway."""
    with grpc.insecure_channel(mesh.gateway, options=NO_PROXY) as channel:
        users = user_pb2_grpc.UserServiceStub(channel)
        out = []
        for _ in range(count):
            email = f"bench-{uuid.uuid4().hex[:12]}@example.com"
            users.Register(
                user_pb2.RegisterRequest(email=email, password=PASSWORD, name="Bench"), timeout=10
            )
            login = users.Login(user_pb2.LoginRequest(email=email, password=PASSWORD), timeout=10)
            out.append(Customer(login.user.user_id, email, login.access_token))
    return out


def admin_token(mesh: BenchMesh) -> str:
    """An operator's token, signed with the mesh's key (what `shopmesh token` does)."""
    key = ensure_signing_key(keys_dir(mesh.var))
    return issue_token(key, str(uuid.UUID(int=1)), "admin", 3600)[0]


def stock_up(mesh: BenchMesh, units: int) -> None:
    """Enough of the product for every order the plan may place, through the gateway."""
    metadata = (("authorization", f"Bearer {admin_token(mesh)}"),)
    with grpc.insecure_channel(mesh.gateway, options=NO_PROXY) as channel:
        stub = inventory_pb2_grpc.InventoryServiceStub(channel)
        while units > 0:
            delta = min(units, MAX_STOCK_STEP)
            stub.AdjustStock(
                inventory_pb2.AdjustStockRequest(product_id=PRODUCT, delta=delta),
                metadata=metadata,
                timeout=10,
            )
            units -= delta


def _target(mesh: BenchMesh, customers: list[Customer]) -> ghz.Target:
    # Each call takes the next customer's token (sprig's list/index/mod in ghz templates).
    # Raw `strings`: ghz expands the template in the JSON text, where quotes are escaped.
    tokens = " ".join(f"`{c.token}`" for c in customers)
    pick = f"{{{{ index (list {tokens}) (mod .RequestNumber {len(customers)}) }}}}"
    return ghz.Target(mesh.gateway, metadata={"authorization": f"Bearer {pick}"})


def _data(prefix: str) -> str:
    # The send time goes into the key: sagadata reads it back beside the confirmation.
    key = f"{prefix}{{{{.TimestampUnixNano}}}}-{{{{.RequestNumber}}}}"
    return (
        f'{{"idempotency_key": "{key}", "lines": [{{"product_id": "{PRODUCT}", "quantity": 1}}]}}'
    )


@dataclass
class Step:
    label: str
    offered: float
    seconds: float
    placed: ghz.Stats
    started: float  # unix seconds
    ended: float  # when the last order ended, or the wait gave up
    orders: list[sagadata.PlacedOrder]
    relay: dict[str, sagadata.RelayRows]

    @property
    def confirmed(self) -> list[sagadata.PlacedOrder]:
        return [o for o in self.orders if o.confirmed_at is not None]

    def confirmed_per_second(self) -> float:
        """The rate confirmations came out, first to last: a mesh that keeps up
        confirms at the offered rate (each order later by its latency); one that does
        not, at its capacity."""
        times = sorted(o.confirmed_at for o in self.orders if o.confirmed_at is not None)
        if len(times) < 2:
            return 0.0
        return (len(times) - 1) / max(times[-1] - times[0], 1e-9)

    def sustained(self) -> bool:
        """Every placement answered OK at (nearly) the offered rate, every order
        confirmed, and confirmations kept pace with the offer."""
        placed = self.placed
        return (
            placed.errors == 0
            and placed.ok >= 0.95 * self.offered * self.seconds
            and len(self.confirmed) == placed.ok
            and self.confirmed_per_second() >= 0.9 * self.offered
        )

    def summary(self) -> dict[str, Any]:
        to_confirm = [
            o.seconds_to_confirm * 1000 for o in self.confirmed if o.seconds_to_confirm is not None
        ]
        lags = [lag for rows in self.relay.values() for lag in rows.lags_ms]
        return {
            "label": self.label,
            "offered_per_s": self.offered,
            "seconds": self.seconds,
            "place": self.placed.as_dict(),
            "orders": len(self.orders),
            "confirmed": len(self.confirmed),
            "cancelled": sum(o.status == "cancelled" for o in self.orders),
            "unfinished": sum(o.status not in sagadata.FINAL for o in self.orders),
            "confirmed_per_s": self.confirmed_per_second(),
            "confirm_p50_ms": sagadata.percentile(to_confirm, 0.50),
            "confirm_p90_ms": sagadata.percentile(to_confirm, 0.90),
            "confirm_p99_ms": sagadata.percentile(to_confirm, 0.99),
            "relay_events": len(lags),
            "relay_p50_ms": sagadata.percentile(lags, 0.50),
            "relay_p99_ms": sagadata.percentile(lags, 0.99),
            "relay_unpublished": sum(rows.unpublished for rows in self.relay.values()),
            "relay_by_service": {
                service: {
                    "events": len(rows.lags_ms),
                    "p50_ms": sagadata.percentile(rows.lags_ms, 0.50),
                    "p99_ms": sagadata.percentile(rows.lags_ms, 0.99),
                }
                for service, rows in self.relay.items()
                if rows.lags_ms
            },
            "sustained": self.sustained(),
        }


class SagaLoad:
    def __init__(self, mesh: BenchMesh, plan: Plan, protoset: Path, customers: list[Customer]):
        self.mesh = mesh
        self.plan = plan
        self.protoset = protoset
        self.customers = customers
        self.run_id = uuid.uuid4().hex[:8]
        self.target = _target(mesh, customers)

    @property
    def data_dir(self) -> Path:
        return self.mesh.var / "data"

    def step(self, label: str, offered: float, seconds: float, progress: Tracker) -> Step:
        prefix = sagadata.key_prefix(self.run_id, label)
        total = max(1, round(offered * seconds))
        # Callers enough for a second of latency, so a slow answer does not hold back
        # the offered rate (ghz waits for an answer before a caller's next call).
        concurrency = max(4, min(200, round(offered)))
        args = ghz.command(
            self.target,
            CALL,
            _data(prefix),
            self.protoset,
            concurrency=concurrency,
            seconds=seconds * 2 + 5,
            total=total,
            rps=offered,
            templates=True,
        )
        progress.begin(f"saga {label}: {total} orders at {offered:.0f}/s")
        started = time.time()
        placed = ghz.run(args, seconds * 2 + 5)
        progress.say(f"saga {label}: {placed.ok} orders placed; waiting for them to end")
        give_up = time.monotonic() + self.plan.settle_seconds
        while sagadata.unsettled(self.data_dir, prefix) and time.monotonic() < give_up:
            time.sleep(0.25)
        ended = time.time()
        orders = sagadata.orders(self.data_dir, prefix)
        relay = sagadata.relay_lags(self.data_dir, started, ended)
        step = Step(label, offered, seconds, placed, started, ended, orders, relay)
        summary = step.summary()
        progress.say(
            f"saga {label}: {summary['confirmed']}/{summary['orders']} confirmed,"
            f" {summary['confirmed_per_s']:.1f}/s, to confirmation p50"
            f" {summary['confirm_p50_ms']:.0f} ms p99 {summary['confirm_p99_ms']:.0f} ms,"
            f" relay p99 {summary['relay_p99_ms']:.1f} ms"
            + (" (sustained)" if summary["sustained"] else " (not sustained)")
        )
        return step

    def fixed(self, progress: Tracker) -> Step:
        return self.step("fixed", self.plan.fixed_rate, self.plan.fixed_seconds, progress)

    def ramp(self, progress: Tracker) -> list[Step]:
        """Rising offered rates, up to the first one the mesh does not sustain."""
        steps: list[Step] = []
        for n, offered in enumerate(self.plan.ramp):
            steps.append(self.step(f"ramp{n}", offered, self.plan.ramp_seconds, progress))
            if not steps[-1].sustained():
                break
        return steps

    def consistency(self, stock_before: dict[str, Any]) -> list[str]:
        """The saga tests' checker over every bench customer: [] when all agree."""

        async def check() -> list[str]:
            client = shop.Shop(app_addresses(self.mesh.mesh))
            try:
                customers = [shop.Customer(c.user_id, c.email) for c in self.customers]
                return await shop.wait_consistent(client, customers, stock_before, timeout=30)
            finally:
                await client.close()

        return asyncio.run(check())

    def stock(self) -> dict[str, Any]:
        async def read() -> dict[str, Any]:
            client = shop.Shop(app_addresses(self.mesh.mesh))
            try:
                return dict(await client.products([PRODUCT]))
            finally:
                await client.close()

        return asyncio.run(read())
