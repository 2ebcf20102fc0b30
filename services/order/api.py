"""Order's gRPC API: decode, call a handler or query, encode. No rules here."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp
from shop.common.v1 import common_pb2
from shop.order.v1 import order_pb2, order_pb2_grpc

from services.order import handlers
from services.order.domain import LineInput, Order, OrderStatus, TimelineEntry
from services.order.storage import UnitOfWork, repository
from services.order.upstreams import GrpcUpstreams
from shopmesh import paging
from shopmesh.errors import InvalidArgument, NotFound
from shopmesh.identity import Caller, caller_from_metadata
from shopmesh.rpc import Context
from shopmesh.server import Runtime


def _timestamp(value: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


_STATUS = {
    OrderStatus.PENDING: order_pb2.ORDER_STATUS_PENDING,
    OrderStatus.CONFIRMED: order_pb2.ORDER_STATUS_CONFIRMED,
    OrderStatus.CANCELLING: order_pb2.ORDER_STATUS_CANCELLING,
    OrderStatus.CANCELLED: order_pb2.ORDER_STATUS_CANCELLED,
}


def _entry_pb(entry: TimelineEntry) -> order_pb2.TimelineEntry:
    return order_pb2.TimelineEntry(
        at=_timestamp(entry.at),
        step=entry.step,
        event_id=entry.event_id,
        status=_STATUS[entry.status],
        detail=entry.detail,
    )


def order_pb(order: Order) -> order_pb2.Order:
    def money(amount_minor: int) -> common_pb2.Money:
        return common_pb2.Money(amount_minor=amount_minor, currency=order.currency)

    return order_pb2.Order(
        order_id=order.order_id,
        user_id=order.user_id,
        status=_STATUS[order.status],
        lines=[
            order_pb2.OrderLine(
                product_id=line.product_id,
                name=line.name,
                quantity=line.quantity,
                unit_price=money(line.unit_price_minor),
                line_total=money(line.total_minor),
            )
            for line in order.lines
        ],
        total=money(order.total_minor),
        idempotency_key=order.idempotency_key,
        cancel_reason=order.cancel_reason,
        created_at=_timestamp(order.created_at),
        updated_at=_timestamp(order.updated_at),
        timeline=[_entry_pb(entry) for entry in order.timeline],
    )


def _after(token: str) -> tuple[datetime, str] | None:
    """The (created_at, order_id) key in a ListOrders page token."""
    key = paging.decode(token, 2)
    if key is None:
        return None
    try:
        created_at = datetime.fromisoformat(key[0])
    except ValueError:
        raise InvalidArgument("page_token is not a token this service issued") from None
    if created_at.tzinfo is None:
        created_at = created_at.replace(tzinfo=UTC)
    return created_at, key[1]


class OrderApi(order_pb2_grpc.OrderServiceServicer):
    def __init__(self, runtime: Runtime, dependency_timeout: float) -> None:
        self.runtime = runtime
        self.dependency_timeout = dependency_timeout

    def uow(self) -> UnitOfWork:
        return UnitOfWork.for_runtime(self.runtime)

    async def PlaceOrder(
        self, request: order_pb2.PlaceOrderRequest, context: Context
    ) -> order_pb2.PlaceOrderResponse:
        caller = caller_from_metadata(context.invocation_metadata())
        order = await handlers.place_order(
            self.uow(),
            caller,
            request.idempotency_key,
            [LineInput(line.product_id, line.quantity) for line in request.lines],
            request.payment_card,
            GrpcUpstreams(self.runtime, context, self.dependency_timeout),
        )
        return order_pb2.PlaceOrderResponse(order=order_pb(order))

    async def GetOrder(
        self, request: order_pb2.GetOrderRequest, context: Context
    ) -> order_pb2.GetOrderResponse:
        caller = caller_from_metadata(context.invocation_metadata())
        async with self.runtime.db.reader.connect() as conn:
            order = await repository.get_order(conn, request.order_id)
        return order_pb2.GetOrderResponse(order=order_pb(_owned(order, caller, request.order_id)))

    async def ListOrders(
        self, request: order_pb2.ListOrdersRequest, context: Context
    ) -> order_pb2.ListOrdersResponse:
        caller = caller_from_metadata(context.invocation_metadata())
        after = _after(request.page_token)
        async with self.runtime.db.reader.connect() as conn:
            page, last = await repository.list_orders(
                conn, caller.user_id, request.page_size, after
            )
        return order_pb2.ListOrdersResponse(
            orders=[order_pb(order) for order in page],
            next_page_token=paging.encode(last[0].isoformat(), last[1]) if last else "",
        )

    async def CancelOrder(
        self, request: order_pb2.CancelOrderRequest, context: Context
    ) -> order_pb2.CancelOrderResponse:
        caller = caller_from_metadata(context.invocation_metadata())
        order = await handlers.cancel_order(self.uow(), caller, request.order_id, request.reason)
        return order_pb2.CancelOrderResponse(order=order_pb(order))


def _owned(order: Order | None, caller: Caller, order_id: str) -> Order:
    # Another user's order is "not found": its id must not leak that it exists. Operators
    # (admin) and services may read any order, as `shopmesh saga` does.
    if order is None or not caller.may_read(order.user_id):
        raise NotFound(f"no order {order_id}")
    return order
