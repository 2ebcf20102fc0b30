"""Wires the notification service: its API, migrations, event handlers and the user
service it asks for addresses."""

from __future__ import annotations

from pathlib import Path

import grpc
from shop.notification.v1 import notification_pb2, notification_pb2_grpc

from services.notification import events
from services.notification.api import NotificationApi
from services.notification.storage import UnitOfWork
from shopmesh.server import Runtime, ServiceSpec, run


def register(server: grpc.aio.Server, runtime: Runtime) -> None:
    notification_pb2_grpc.add_NotificationServiceServicer_to_server(
        NotificationApi(runtime), server
    )


SPEC = ServiceSpec(
    name="notification",
    grpc_services=[notification_pb2.DESCRIPTOR.services_by_name["NotificationService"].full_name],
    migrations=Path(__file__).parent / "storage" / "migrations",
    register=register,
    dependencies=["user"],
    subscriptions=events.subscriptions,
    unit_of_work=UnitOfWork,
)


def main() -> None:
    run(SPEC)
