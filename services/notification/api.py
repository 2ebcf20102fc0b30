"""Notification's gRPC API: decode, call a query, encode. No rules here."""

from __future__ import annotations

from datetime import UTC, datetime

from shop.notification.v1 import notification_pb2, notification_pb2_grpc

from services.notification.domain import Kind, Notification
from services.notification.storage import repository
from shopmesh import paging
from shopmesh.errors import InvalidArgument
from shopmesh.identity import caller_from_metadata
from shopmesh.rpc import Context
from shopmesh.server import Runtime

KINDS = {
    Kind.ORDER_CONFIRMED: notification_pb2.NOTIFICATION_KIND_ORDER_CONFIRMED,
    Kind.ORDER_CANCELLED: notification_pb2.NOTIFICATION_KIND_ORDER_CANCELLED,
    Kind.PAYMENT_REFUNDED: notification_pb2.NOTIFICATION_KIND_PAYMENT_REFUNDED,
}


def notification_pb(notification: Notification) -> notification_pb2.Notification:
    message = notification_pb2.Notification(
        notification_id=notification.notification_id,
        user_id=notification.user_id,
        order_id=notification.order_id,
        kind=KINDS[notification.kind],
        recipient=notification.recipient,
        subject=notification.subject,
        body=notification.body,
    )
    message.created_at.FromDatetime(notification.created_at)
    return message


def page_token(key: repository.Key) -> str:
    created_at, notification_id = key
    return paging.encode(created_at.isoformat(), notification_id)


def after(token: str) -> repository.Key | None:
    """The key in a page token this API issued; InvalidArgument for anything else."""
    key = paging.decode(token, 2)
    if key is None:
        return None
    try:
        created_at = datetime.fromisoformat(key[0])
        # Compared in UTC: that is how every row's timestamp is stored.
        if created_at.tzinfo is not None:
            return created_at.astimezone(UTC), key[1]
    except (ValueError, OverflowError):
        pass
    raise InvalidArgument("page_token is not a token this service issued")


class NotificationApi(notification_pb2_grpc.NotificationServiceServicer):
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def ListNotifications(
        self, request: notification_pb2.ListNotificationsRequest, context: Context
    ) -> notification_pb2.ListNotificationsResponse:
        caller = caller_from_metadata(context.invocation_metadata())
        start = after(request.page_token)
        async with self.runtime.db.reader.connect() as conn:
            page, last = await repository.list_notifications(
                conn, caller.user_id, request.page_size, start
            )
        return notification_pb2.ListNotificationsResponse(
            notifications=[notification_pb(n) for n in page],
            next_page_token=page_token(last) if last else "",
        )
