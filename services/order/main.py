"""Wires the order service: its API, its one sync dependency (inventory) and its saga
handlers."""

from __future__ import annotations

import os
from pathlib import Path

import grpc
from shop.order.v1 import order_pb2, order_pb2_grpc

from services.order import events
from services.order.api import OrderApi
from services.order.storage import UnitOfWork
from shopmesh.server import Runtime, ServiceSpec, run

# Seconds each call to inventory may take at most (less when the caller's own deadline
# is nearer).
DEPENDENCY_TIMEOUT_ENV = "SHOPMESH_ORDER_DEPENDENCY_TIMEOUT"


def dependency_timeout() -> float:
    timeout = float(os.environ.get(DEPENDENCY_TIMEOUT_ENV, "2"))
    if not timeout > 0:  # also refuses nan
        raise ValueError(f"{DEPENDENCY_TIMEOUT_ENV} must be positive, got {timeout}")
    return timeout


def register(server: grpc.aio.Server, runtime: Runtime) -> None:
    # Read here so a bad value stops the instance at start, not at the first order.
    timeout = dependency_timeout()
    order_pb2_grpc.add_OrderServiceServicer_to_server(OrderApi(runtime, timeout), server)


SPEC = ServiceSpec(
    name="order",
    grpc_services=[order_pb2.DESCRIPTOR.services_by_name["OrderService"].full_name],
    migrations=Path(__file__).parent / "storage" / "migrations",
    register=register,
    # Not user: the gateway verified the caller (services/order/handlers.py, _USER_ID).
    dependencies=["inventory"],
    subscriptions=events.subscriptions,
    unit_of_work=UnitOfWork,
)


def main() -> None:
    run(SPEC)
