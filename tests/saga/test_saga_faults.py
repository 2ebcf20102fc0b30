"""The saga's promises under faults: processes that really die, duplicates, poison
messages, a flaky provider, and nats-server going away with orders in flight.

Every test ends with the consistency checker green and no order left pending. Crash
points are the test-only hooks of shopmesh/faults.py: the process kills itself with
SIGKILL at the armed point, and the test restarts it through the runner.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator, Mapping

import nats
import pytest
from shop.inventory.v1 import inventory_pb2
from shop.order.v1 import events_pb2 as order_events
from shop.order.v1 import order_pb2 as order
from shop.payment.v1 import events_pb2 as payment_events
from shop.payment.v1 import payment_pb2 as pay

from shopmesh import bus, dlq
from shopmesh.faults import arm
from shopmesh.runner import Mesh
from tests.support.mesh import app_addresses, running_mesh, shopmesh_cli
from tests.support.shop import Customer, Shop, wait_consistent

pytestmark = [pytest.mark.fault, pytest.mark.timeout(300)]

ENVIRONMENT = {
    "SHOPMESH_FAULT_HOOKS": "1",
    # A crashed consumer's message comes back after ack_wait: keep the tests quick.
    "SHOPMESH_BUS_ACK_WAIT": "2",
    "SHOPMESH_BUS_MAX_DELIVER": "6",
    # Each payment instance's provider fails its first two refunds.
    "SHOPMESH_FAKE_REFUND_FAILURES": "2",
}


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    with running_mesh(tmp_path_factory.mktemp("faults"), ENVIRONMENT) as running:
        yield running


@pytest.fixture
async def shop(mesh: Mesh) -> AsyncIterator[Shop]:
    client = Shop(app_addresses(mesh))
    yield client
    await client.close()


def wait_dead(mesh: Mesh, service: str, timeout: float = 30) -> str:
    """The instance of `service` that died; fails if none did within `timeout`."""
    give_up = time.monotonic() + timeout
    while time.monotonic() < give_up:
        for status in mesh.status():
            if status.name.startswith(f"{service}-") and status.state in {
                "EXITED",
                "FATAL",
                "BACKOFF",
            }:
                return status.name
        time.sleep(0.1)
    raise AssertionError(f"no {service} instance died within {timeout}s")


def restart(mesh: Mesh, name: str) -> None:
    mesh.start_program(name)
    mesh.wait_ready(timeout=90)


async def stream_events(mesh: Mesh, stream: str, subject: str) -> list[bytes]:
    nc = await nats.connect(mesh.topology.nats_url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(stream)
        found = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            message = await js.get_msg(stream, seq)
            if message.subject == subject:
                found.append(message.data or b"")
        return found
    finally:
        await nc.close()


async def confirmed_and_consistent(
    shop: Shop, who: Customer, order_id: str, before: Mapping[str, inventory_pb2.Product]
) -> None:
    done = await shop.settle(who, order_id, timeout=60)
    assert done.status == order.ORDER_STATUS_CONFIRMED
    assert await wait_consistent(shop, [who], before) == []


async def test_producer_crash_after_commit_before_publish(mesh: Mesh, shop: Shop) -> None:
    before = await shop.products(["sku-mug"])
    who = await shop.customer()
    arm(mesh.var.root, "order", "relay.before_publish")
    placed = await shop.place(who, {"sku-mug": 1})  # committed: the caller was told so

    assert await asyncio.to_thread(wait_dead, mesh, "order") == "order-1"
    await asyncio.to_thread(restart, mesh, "order-1")
    await confirmed_and_consistent(shop, who, placed.order_id, before)


async def test_crash_after_publish_before_marking(mesh: Mesh, shop: Shop) -> None:
    before = await shop.products(["sku-mug"])
    who = await shop.customer()
    arm(mesh.var.root, "payment", "relay.before_mark")
    placed = await shop.place(who, {"sku-mug": 1})

    await asyncio.to_thread(restart, mesh, await asyncio.to_thread(wait_dead, mesh, "payment"))
    await confirmed_and_consistent(shop, who, placed.order_id, before)
    # The re-publish after restart was dropped by JetStream: one event, not two.
    completed = [
        payment_events.PaymentCompleted.FromString(data)
        for data in await stream_events(mesh, "PAYMENT", "shop.payment.completed")
    ]
    assert [e.order_id for e in completed].count(placed.order_id) == 1


async def test_consumer_crash_after_effect_before_ack(mesh: Mesh, shop: Shop) -> None:
    before = await shop.products(["sku-mug"])
    who = await shop.customer()
    arm(mesh.var.root, "inventory", "consumer.before_ack")
    placed = await shop.place(who, {"sku-mug": 3})

    await asyncio.to_thread(restart, mesh, await asyncio.to_thread(wait_dead, mesh, "inventory"))
    # The redelivered PaymentCompleted must not reserve a second time: the checker
    # compares reserved units with confirmed orders.
    await confirmed_and_consistent(shop, who, placed.order_id, before)


async def test_a_duplicated_event_changes_nothing(mesh: Mesh, shop: Shop) -> None:
    before = await shop.products(["sku-mug"])
    who = await shop.customer()
    placed = await shop.place(who, {"sku-mug": 1})
    await shop.settle(who, placed.order_id)
    [created] = [
        data
        for data in await stream_events(mesh, "ORDER", "shop.order.created")
        if order_events.OrderCreated.FromString(data).order_id == placed.order_id
    ]
    nc = await nats.connect(mesh.topology.nats_url)
    try:  # the same event again, as a relay past the duplicate window would send it
        await nc.jetstream().publish(
            "shop.order.created",
            created,
            headers={
                bus.MSG_ID: f"copy-{placed.order_id}",
                bus.EVENT_TYPE: "shop.order.v1.OrderCreated",
            },
        )
    finally:
        await nc.close()
    await asyncio.sleep(2)
    assert len(await shop.payments_of(who, placed.order_id)) == 1
    await confirmed_and_consistent(shop, who, placed.order_id, before)


async def test_a_poison_message_is_dead_lettered_and_completes_after_replay(
    mesh: Mesh, shop: Shop
) -> None:
    before = await shop.products(["sku-mug"])
    who = await shop.customer()
    cause = arm(mesh.var.root, "inventory", "consumer.handler")
    placed = await shop.place(who, {"sku-mug": 1})

    letter = await dead_letter_for(mesh, placed.order_id)
    assert letter.consumer == "inventory-payment-completed"
    stuck = await shop.get(who, placed.order_id)
    assert stuck.status == order.ORDER_STATUS_PENDING
    assert stuck.timeline[-1].step == "shop.payment.v1.PaymentCompleted"

    listed = await shopmesh_cli(mesh, "dlq", "list")
    assert "inventory-payment-completed" in listed
    assert "fault hook" in listed  # the last error
    assert placed.order_id in await shopmesh_cli(mesh, "dlq", "show", str(letter.seq))

    cause.unlink()  # fix the cause, then replay with the operator's command
    await shopmesh_cli(mesh, "dlq", "replay", str(letter.seq))
    await confirmed_and_consistent(shop, who, placed.order_id, before)


async def dead_letter_for(mesh: Mesh, order_id: str, timeout: float = 60) -> dlq.DeadLetter:
    nc = await nats.connect(mesh.topology.nats_url)
    try:
        loop = asyncio.get_running_loop()
        give_up = loop.time() + timeout
        while loop.time() < give_up:
            for letter in await dlq.list_letters(nc.jetstream()):
                if order_id in letter.event_json():
                    return letter
            await asyncio.sleep(0.5)
    finally:
        await nc.close()
    raise AssertionError(f"no dead letter for {order_id}")


async def test_a_refund_that_fails_a_few_times_then_succeeds(mesh: Mesh, shop: Shop) -> None:
    await shop.set_stock("sku-scale", 1)
    before = await shop.products(["sku-scale"])
    who = await shop.customer()
    placed = await shop.place(who, {"sku-scale": 2})  # paid, then no stock: refund

    done = await shop.settle(who, placed.order_id, timeout=60)
    assert done.status == order.ORDER_STATUS_CANCELLED
    [payment] = await shop.payments_of(who, placed.order_id)
    assert payment.status == pay.PAYMENT_STATUS_REFUNDED
    logs = "".join(
        path.read_text() for name, path in mesh.log_paths().items() if name.startswith("payment-")
    )
    assert "ProviderUnavailable" in logs  # it did fail before it succeeded
    assert await wait_consistent(shop, [who], before) == []


async def test_nats_restart_mid_saga_loses_nothing(mesh: Mesh, shop: Shop) -> None:
    before = await shop.products(["sku-mug"])
    customers = [await shop.customer() for _ in range(3)]
    placed = [(c, await shop.place(c, {"sku-mug": 1})) for c in customers for _ in range(4)]
    await asyncio.to_thread(mesh.stop_program, "nats")
    # Orders keep being accepted while the bus is away: they wait in the outboxes.
    placed += [(c, await shop.place(c, {"sku-mug": 1})) for c in customers for _ in range(3)]
    await asyncio.sleep(1)
    await asyncio.to_thread(mesh.start_program, "nats")

    ended = await asyncio.gather(*(shop.settle(c, o.order_id, timeout=90) for c, o in placed))
    assert {o.status for o in ended} == {order.ORDER_STATUS_CONFIRMED}
    assert await wait_consistent(shop, customers, before) == []
    # No service gave up while the bus was away.
    assert [s.name for s in await asyncio.to_thread(mesh.status) if s.crashed] == []
