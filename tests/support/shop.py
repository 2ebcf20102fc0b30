"""A small client for the shop's APIs, for end-to-end tests, and the consistency checker.

The client talks to each service's own port with the identity metadata the gateway
would set after verifying a token; the mesh tests do the same journeys through the
gateway with real tokens.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import grpc
from shop.inventory.v1 import inventory_pb2 as inv
from shop.inventory.v1.inventory_pb2_grpc import InventoryServiceStub
from shop.notification.v1 import notification_pb2 as note
from shop.notification.v1.notification_pb2_grpc import NotificationServiceStub
from shop.order.v1 import order_pb2 as order
from shop.order.v1.order_pb2_grpc import OrderServiceStub
from shop.payment.v1 import payment_pb2 as pay
from shop.payment.v1.payment_pb2_grpc import PaymentServiceStub
from shop.user.v1 import user_pb2 as user
from shop.user.v1.user_pb2_grpc import UserServiceStub

from tests.support.inprocess import as_user

FINAL = {order.ORDER_STATUS_CONFIRMED, order.ORDER_STATUS_CANCELLED}
ADMIN = as_user(str(uuid.UUID(int=1)), "admin")
DECLINED_CARD = "4000000000000002"


@dataclass(frozen=True)
class Customer:
    user_id: str
    email: str

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return as_user(self.user_id)


class Shop:
    """Stubs for every service, given each service's address."""

    def __init__(self, addresses: Mapping[str, str]) -> None:
        self.channels = {name: grpc.aio.insecure_channel(a) for name, a in addresses.items()}
        self.users = UserServiceStub(self.channels["user"])
        self.orders = OrderServiceStub(self.channels["order"])
        self.inventory = InventoryServiceStub(self.channels["inventory"])
        self.payments = PaymentServiceStub(self.channels["payment"])
        self.notifications = NotificationServiceStub(self.channels["notification"])

    async def close(self) -> None:
        for channel in self.channels.values():
            await channel.close()

    async def customer(self) -> Customer:
        email = f"c-{uuid.uuid4().hex[:12]}@example.com"
        reply = await self.users.Register(
            user.RegisterRequest(email=email, password="correct horse battery", name="Test")
        )
        return Customer(reply.user.user_id, email)

    async def place(self, who: Customer, lines: Mapping[str, int], card: str = "") -> order.Order:
        reply = await self.orders.PlaceOrder(
            order.PlaceOrderRequest(
                idempotency_key=f"key-{uuid.uuid4().hex}",
                lines=[order.OrderLineInput(product_id=p, quantity=q) for p, q in lines.items()],
                payment_card=card,
            ),
            metadata=who.metadata,
            timeout=10,
        )
        placed: order.Order = reply.order
        return placed

    async def get(self, who: Customer, order_id: str) -> order.Order:
        reply = await self.orders.GetOrder(
            order.GetOrderRequest(order_id=order_id), metadata=who.metadata, timeout=10
        )
        found: order.Order = reply.order
        return found

    async def settle(self, who: Customer, order_id: str, timeout: float = 30) -> order.Order:
        """Wait until the order reaches CONFIRMED or CANCELLED."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + timeout
        while True:
            current = await self.get(who, order_id)
            if current.status in FINAL:
                return current
            if loop.time() > give_up:
                raise AssertionError(f"order {order_id} still {current.status} after {timeout}s")
            await asyncio.sleep(0.05)

    async def products(self, ids: Iterable[str]) -> dict[str, inv.Product]:
        found = {}
        for product_id in ids:
            reply = await self.inventory.GetProduct(inv.GetProductRequest(product_id=product_id))
            found[product_id] = reply.product
        return found

    async def set_stock(self, product_id: str, available: int) -> None:
        current = (await self.products([product_id]))[product_id]
        if current.available != available:
            await self.inventory.AdjustStock(
                inv.AdjustStockRequest(product_id=product_id, delta=available - current.available),
                metadata=ADMIN,
            )

    async def payments_of(self, who: Customer, order_id: str) -> list[pay.Payment]:
        reply = await self.payments.ListPayments(
            pay.ListPaymentsRequest(order_id=order_id), metadata=who.metadata
        )
        return list(reply.payments)

    async def notifications_of(self, who: Customer) -> list[note.Notification]:
        found: list[note.Notification] = []
        token = ""
        while True:
            reply = await self.notifications.ListNotifications(
                note.ListNotificationsRequest(page_size=100, page_token=token),
                metadata=who.metadata,
            )
            found += reply.notifications
            token = reply.next_page_token
            if not token:
                return found

    async def orders_of(self, who: Customer) -> list[order.Order]:
        found: list[order.Order] = []
        token = ""
        while True:
            reply = await self.orders.ListOrders(
                order.ListOrdersRequest(page_size=100, page_token=token), metadata=who.metadata
            )
            found += reply.orders
            token = reply.next_page_token
            if not token:
                return found


async def consistency_problems(
    shop: Shop, customers: Iterable[Customer], stock_before: Mapping[str, inv.Product]
) -> list[str]:
    """Compare the services' own data; an empty list means money and stock agree.

    - every order ended (CONFIRMED or CANCELLED);
    - a CONFIRMED order has exactly one payment, COMPLETED, for its total;
    - a CANCELLED order has no COMPLETED payment (none, FAILED or REFUNDED);
    - each product's reserved units grew by exactly the confirmed orders' quantities,
      and no unit was created or lost (available + reserved unchanged);
    - each ended order has its notification, and each refund too.
    """
    problems: list[str] = []
    reserved: Counter[str] = Counter()
    for who in customers:
        kinds: dict[str, set[int]] = defaultdict(set)
        for n in await shop.notifications_of(who):
            kinds[n.order_id].add(n.kind)
        for listed in await shop.orders_of(who):
            o = await shop.get(who, listed.order_id)
            payments = await shop.payments_of(who, o.order_id)
            statuses = sorted(p.status for p in payments)
            where = f"order {o.order_id} ({order.OrderStatus.Name(o.status)})"
            if o.status not in FINAL:
                problems.append(f"{where} has not ended")
            if o.status == order.ORDER_STATUS_CONFIRMED:
                if statuses != [pay.PAYMENT_STATUS_COMPLETED]:
                    problems.append(f"{where} has payments {statuses}")
                elif payments[0].amount != o.total:
                    problems.append(f"{where} charged {payments[0].amount} for {o.total}")
                for line in o.lines:
                    reserved[line.product_id] += line.quantity
                if note.NOTIFICATION_KIND_ORDER_CONFIRMED not in kinds[o.order_id]:
                    problems.append(f"{where} has no confirmation notification")
            if o.status == order.ORDER_STATUS_CANCELLED:
                if pay.PAYMENT_STATUS_COMPLETED in statuses:
                    problems.append(f"{where} kept a captured payment")
                if note.NOTIFICATION_KIND_ORDER_CANCELLED not in kinds[o.order_id]:
                    problems.append(f"{where} has no cancellation notification")
            if pay.PAYMENT_STATUS_REFUNDED in statuses and (
                note.NOTIFICATION_KIND_PAYMENT_REFUNDED not in kinds[o.order_id]
            ):
                problems.append(f"{where} has no refund notification")
    after = await shop.products(stock_before)
    for product_id, before in stock_before.items():
        now = after[product_id]
        if now.reserved - before.reserved != reserved[product_id]:
            problems.append(
                f"{product_id}: reserved {before.reserved} -> {now.reserved}, "
                f"confirmed orders hold {reserved[product_id]}"
            )
        if now.available + now.reserved != before.available + before.reserved:
            problems.append(f"{product_id}: units created or lost ({before} -> {now})")
        if now.available < 0:
            problems.append(f"{product_id}: negative stock {now.available}")
    return problems


async def wait_consistent(
    shop: Shop,
    customers: Iterable[Customer],
    stock_before: Mapping[str, inv.Product],
    timeout: float = 30,
) -> list[str]:
    """The checker's problems once the eventually consistent parts (notifications,
    compensations in flight) had `timeout` seconds to settle; [] when all agree."""
    customers = list(customers)
    loop = asyncio.get_running_loop()
    give_up = loop.time() + timeout
    while True:
        problems = await consistency_problems(shop, customers, stock_before)
        if not problems or loop.time() > give_up:
            return problems
        await asyncio.sleep(0.5)
