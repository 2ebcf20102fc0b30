"""Operator commands on a running mesh: the saga of an order, dead letters, traces, tokens.

Registered on the `shopmesh` group in shopmesh/cli.py.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click
import grpc
import nats
from rich.console import Console
from rich.table import Table
from shop.order.v1 import order_pb2, order_pb2_grpc
from shop.user.v1 import user_pb2, user_pb2_grpc

from shopmesh import dlq as dead_letters
from shopmesh import traces
from shopmesh.identity import ROLE_HEADER, USER_ID_HEADER, Role
from shopmesh.runner import Mesh, MeshNotRunning
from shopmesh.tracesink import STATS_FILE

console = Console(highlight=False)
T = TypeVar("T")

# Operators read any order: the identity an admin token would give at the gateway.
OPERATOR = ((USER_ID_HEADER, str(uuid.UUID(int=0))), (ROLE_HEADER, Role.ADMIN.value))


def _mesh(ctx: click.Context) -> Mesh:
    try:
        return Mesh.attach(ctx.obj.var)
    except MeshNotRunning as exc:
        raise click.ClickException(str(exc)) from None


def _run(work: Callable[[], Coroutine[Any, Any, T]]) -> T:
    return asyncio.run(work())


def _status(status: int) -> str:
    return order_pb2.OrderStatus.Name(status).removeprefix("ORDER_STATUS_")


@click.command()
@click.argument("order_id")
@click.pass_context
def saga(ctx: click.Context, order_id: str) -> None:
    """Print ORDER_ID's status and saga timeline."""
    mesh = _mesh(ctx)
    address = mesh.topology.service("order").instances[0].app_addr

    async def fetch() -> order_pb2.Order:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = order_pb2_grpc.OrderServiceStub(channel)
            try:
                reply = await stub.GetOrder(
                    order_pb2.GetOrderRequest(order_id=order_id), metadata=OPERATOR, timeout=5
                )
            except grpc.aio.AioRpcError as error:
                raise click.ClickException(f"{error.code().name}: {error.details()}") from None
            found: order_pb2.Order = reply.order
            return found

    console.print(timeline_table(_run(fetch)))


def timeline_table(order: order_pb2.Order) -> Table:
    table = Table(title=f"order {order.order_id}: {_status(order.status)}")
    for column in ("at", "step", "status after", "detail", "event id"):
        table.add_column(column)
    for entry in order.timeline:
        table.add_row(
            entry.at.ToDatetime(UTC).strftime("%H:%M:%S.%f")[:-3],
            entry.step,
            _status(entry.status),
            entry.detail,
            entry.event_id[:8],
        )
    return table


@click.command()
@click.option("--product", default="sku-espresso", show_default=True)
@click.option("--quantity", default=1, show_default=True)
@click.option("--card", default="", help="4000000000000002 makes the payment fail.")
@click.pass_context
def demo(ctx: click.Context, product: str, quantity: int, card: str) -> None:
    """A customer's journey through the gateway: register, log in, order, watch the saga."""
    gateway = f"127.0.0.1:{_mesh(ctx).topology.gateway_port}"

    async def journey() -> order_pb2.Order:
        async with grpc.aio.insecure_channel(gateway) as channel:
            users = user_pb2_grpc.UserServiceStub(channel)
            email = f"demo-{uuid.uuid4().hex[:8]}@example.com"
            password = "correct horse battery"
            registered = await users.Register(
                user_pb2.RegisterRequest(email=email, password=password, name="Demo"), timeout=5
            )
            console.print(f"registered {email} as {registered.user.user_id}")
            login = await users.Login(
                user_pb2.LoginRequest(email=email, password=password), timeout=5
            )
            auth = (("authorization", f"Bearer {login.access_token}"),)
            console.print("logged in: the gateway will verify this token on every call")
            orders = order_pb2_grpc.OrderServiceStub(channel)
            placed = await orders.PlaceOrder(
                order_pb2.PlaceOrderRequest(
                    idempotency_key=f"demo-{uuid.uuid4().hex}",
                    lines=[order_pb2.OrderLineInput(product_id=product, quantity=quantity)],
                    payment_card=card,
                ),
                metadata=auth,
                timeout=5,
            )
            order_id = placed.order.order_id
            console.print(f"placed order {order_id}: {_status(placed.order.status)}")
            for _ in range(150):  # the saga ends in well under a second on an idle mesh
                got = await orders.GetOrder(
                    order_pb2.GetOrderRequest(order_id=order_id), metadata=auth, timeout=5
                )
                if got.order.status in (
                    order_pb2.ORDER_STATUS_CONFIRMED,
                    order_pb2.ORDER_STATUS_CANCELLED,
                ):
                    break
                await asyncio.sleep(0.1)
            ended: order_pb2.Order = got.order
            return ended

    try:
        order = _run(journey)
    except grpc.aio.AioRpcError as error:
        raise click.ClickException(f"{error.code().name}: {error.details()}") from None
    console.print(timeline_table(order))
    console.print(f"see it whole: shopmesh trace {order.order_id}")


@click.group()
def dlq() -> None:
    """Inspect and replay dead letters (events a consumer gave up on)."""


def _with_js(ctx: click.Context, work: Callable[..., Awaitable[T]], *args: object) -> T:
    url = _mesh(ctx).topology.nats_url

    async def go() -> T:
        nc = await nats.connect(url, connect_timeout=2, max_reconnect_attempts=0)
        try:
            return await work(nc.jetstream(), *args)
        finally:
            await nc.close()

    return asyncio.run(go())


@dlq.command("list")
@click.pass_context
def dlq_list(ctx: click.Context) -> None:
    """One line per dead letter."""
    letters = _with_js(ctx, dead_letters.list_letters)
    table = Table(title=f"{len(letters)} dead letter(s)")
    for column in ("seq", "when", "consumer", "subject", "error"):
        table.add_column(column)
    for letter in letters:
        when = letter.time.strftime("%H:%M:%S") if isinstance(letter.time, datetime) else ""
        table.add_row(str(letter.seq), when, letter.consumer, letter.subject, letter.error)
    console.print(table)


@dlq.command("show")
@click.argument("seq", type=int)
@click.pass_context
def dlq_show(ctx: click.Context, seq: int) -> None:
    """Headers and decoded event of dead letter SEQ."""
    letter = _with_js(ctx, dead_letters.get_letter, seq)
    if letter is None:
        raise click.ClickException(f"no dead letter {seq}")
    for key, value in sorted(letter.headers.items()):
        console.print(f"[bold]{key}[/]: {value}")
    console.print(letter.event_json())


@dlq.command("replay")
@click.argument("seq", type=int)
@click.pass_context
def dlq_replay(ctx: click.Context, seq: int) -> None:
    """Publish dead letter SEQ to its original subject again (after fixing the cause)."""
    try:
        letter = _with_js(ctx, dead_letters.replay, seq)
    except LookupError as exc:
        raise click.ClickException(str(exc)) from None
    console.print(f"replayed {seq} to {letter.subject} for {letter.consumer}")


@click.command()
@click.argument("key", required=False)
@click.option("--last", is_flag=True, help="The newest trace.")
@click.pass_context
def trace(ctx: click.Context, key: str | None, last: bool) -> None:
    """Print the span tree of trace KEY (a trace id or an order id), or the newest."""
    if not key and not last:
        raise click.UsageError("give a trace id, an order id, or --last")
    spans = traces.find_trace(ctx.obj.var / "traces", None if last else key)
    if not spans:
        raise click.ClickException(
            f"no trace for {key or 'the newest'} in {ctx.obj.var / 'traces'}"
        )
    start = spans[0].start_ns
    table = Table(title=f"trace {spans[0].trace_id} ({len(spans)} spans)")
    for column in ("span", "service", "start ms", "duration ms", "status"):
        table.add_column(column)
    for depth, span in traces.tree(spans):
        table.add_row(
            "  " * depth + span.name,
            span.instance or span.service,
            f"{(span.start_ns - start) / 1e6:.1f}",
            f"{span.duration_ms:.2f}",
            span.status if not span.status_message else f"{span.status}: {span.status_message}",
        )
    console.print(table)


@click.command()
@click.option("--user", "user_id", default=str(uuid.UUID(int=0)), show_default=True)
@click.option(
    "--role", type=click.Choice(["customer", "admin"]), default="admin", show_default=True
)
@click.option("--ttl", default=900, show_default=True, help="Seconds the token is valid.")
@click.pass_context
def token(ctx: click.Context, user_id: str, role: str, ttl: int) -> None:
    """Mint a token signed with the mesh's key (for grpcurl as an operator)."""
    # The user service owns the signing key; this reuses its code rather than copy it.
    from services.user.tokens import ensure_signing_key, issue_token, keys_dir

    signed, _ = issue_token(ensure_signing_key(keys_dir(ctx.obj.var)), user_id, role, ttl)
    click.echo(signed)


def rpc_table(traces_dir: Path) -> Table | None:
    """Per service: requests/s, error rate, p50/p99 over the latest metrics window."""
    try:
        stats = json.loads((traces_dir / STATS_FILE).read_text())
    except (OSError, ValueError):
        return None
    table = Table(title="rpcs (last metrics window)")
    for column in ("service", "req/s", "errors", "p50 ms", "p99 ms"):
        table.add_column(column)
    for service, figures in sorted(stats.items()):
        table.add_row(
            service,
            f"{figures['rps']:.1f}",
            f"{figures['error_rate']:.1%}",
            *(f"{figures[q]:g}" if figures[q] is not None else "-" for q in ("p50_ms", "p99_ms")),
        )
    return table


COMMANDS = (saga, dlq, trace, token, demo)
