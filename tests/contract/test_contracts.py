"""The contracts say what ARCHITECTURE.md promises, and document themselves."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from google.api import annotations_pb2
from google.protobuf import descriptor_pb2

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.contract

SERVICES = {
    "shop.user.v1.UserService": {"Register", "Login", "GetUser"},
    "shop.order.v1.OrderService": {"PlaceOrder", "GetOrder", "ListOrders", "CancelOrder"},
    "shop.inventory.v1.InventoryService": {"ListProducts", "GetProduct", "AdjustStock"},
    "shop.payment.v1.PaymentService": {"GetPayment", "ListPayments"},
    "shop.notification.v1.NotificationService": {"ListNotifications"},
}

EVENTS = {
    "shop.user.v1": {"UserRegistered"},
    "shop.order.v1": {
        "OrderCreated",
        "OrderConfirmed",
        "OrderCancelled",
        "OrderCancellationRequested",
    },
    "shop.payment.v1": {"PaymentCompleted", "PaymentFailed", "PaymentRefunded"},
    "shop.inventory.v1": {"StockReserved", "StockRejected", "StockReleased"},
}


@pytest.fixture(scope="module")
def files() -> list[descriptor_pb2.FileDescriptorProto]:
    image = subprocess.run(
        ["buf", "build", "proto", "-o", "-#format=binpb"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    fds = descriptor_pb2.FileDescriptorSet.FromString(image)
    return [f for f in fds.file if f.name.startswith("shop/")]


def test_every_service_has_the_rpcs_of_the_domain_table(
    files: list[descriptor_pb2.FileDescriptorProto],
) -> None:
    found = {f"{f.package}.{s.name}": {m.name for m in s.method} for f in files for s in f.service}
    assert found == SERVICES


def test_every_event_is_its_own_message_with_meta_first(
    files: list[descriptor_pb2.FileDescriptorProto],
) -> None:
    for f in files:
        if not f.name.endswith("/events.proto"):
            continue
        names = {m.name for m in f.message_type}
        assert names == EVENTS[f.package]
        for message in f.message_type:
            first = message.field[0]
            assert (first.name, first.number, first.type_name) == (
                "meta",
                1,
                ".shop.common.v1.EventMeta",
            ), message.name
    assert {f.package for f in files if f.name.endswith("/events.proto")} == set(EVENTS)


def test_every_rpc_has_an_http_route(files: list[descriptor_pb2.FileDescriptorProto]) -> None:
    for f in files:
        for service in f.service:
            for method in service.method:
                rule = method.options.Extensions[annotations_pb2.http]
                assert rule.WhichOneof("pattern"), f"{service.name}.{method.name}"


def test_every_element_is_documented(files: list[descriptor_pb2.FileDescriptorProto]) -> None:
    undocumented = []
    for f in files:
        commented = {
            tuple(loc.path) for loc in f.source_code_info.location if loc.leading_comments.strip()
        }
        # Paths per descriptor.proto: 4 = message_type, 2 = field, 5 = enum_type,
        # 2 (in an enum) = value, 6 = service, 2 (in a service) = method.
        for i, message in enumerate(f.message_type):
            if (4, i) not in commented:
                undocumented.append(f"{f.name}: message {message.name}")
            undocumented += [
                f"{f.name}: {message.name}.{field.name}"
                for j, field in enumerate(message.field)
                if (4, i, 2, j) not in commented
            ]
        for i, enum in enumerate(f.enum_type):
            undocumented += [
                f"{f.name}: {enum.name}.{value.name}"
                for j, value in enumerate(enum.value)
                if (5, i, 2, j) not in commented
            ]
        for i, service in enumerate(f.service):
            if (6, i) not in commented:
                undocumented.append(f"{f.name}: service {service.name}")
            undocumented += [
                f"{f.name}: rpc {method.name}"
                for j, method in enumerate(service.method)
                if (6, i, 2, j) not in commented
            ]
    assert undocumented == []
