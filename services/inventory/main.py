"""Wires the inventory service: its API, migrations and first-start seeding."""

from __future__ import annotations

from pathlib import Path

import grpc
from shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc

from services.inventory import events, handlers
from services.inventory.api import InventoryApi
from services.inventory.storage import UnitOfWork
from shopmesh.server import Runtime, ServiceSpec, run


def register(server: grpc.aio.Server, runtime: Runtime) -> None:
    inventory_pb2_grpc.add_InventoryServiceServicer_to_server(InventoryApi(runtime), server)


async def on_start(runtime: Runtime) -> None:
    await handlers.seed_catalogue(UnitOfWork.for_runtime(runtime))


SPEC = ServiceSpec(
    name="inventory",
    grpc_services=[inventory_pb2.DESCRIPTOR.services_by_name["InventoryService"].full_name],
    migrations=Path(__file__).parent / "storage" / "migrations",
    register=register,
    on_start=on_start,
    subscriptions=events.subscriptions,
    unit_of_work=UnitOfWork,
)


def main() -> None:
    run(SPEC)
