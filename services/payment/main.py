"""Wires the payment service: its API, migrations and the saga with its fake provider."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import grpc
from shop.payment.v1 import payment_pb2, payment_pb2_grpc

from services.payment import events
from services.payment.api import PaymentApi
from services.payment.domain import DEFAULT_USER_LIMIT_MINOR, FakeProvider
from services.payment.storage import UnitOfWork
from shopmesh.events import Subscription
from shopmesh.server import Runtime, ServiceSpec, run

USER_LIMIT_ENV = "SHOPMESH_PAYMENT_USER_LIMIT_MINOR"
REFUND_FAILURES_ENV = "SHOPMESH_FAKE_REFUND_FAILURES"


def provider_from_env(env: Mapping[str, str]) -> FakeProvider:
    """The fake provider as the environment configures it (ValueError if malformed)."""
    return FakeProvider(
        user_limit_minor=int(env.get(USER_LIMIT_ENV, DEFAULT_USER_LIMIT_MINOR)),
        refund_failures=int(env.get(REFUND_FAILURES_ENV, 0)),
    )


def register(server: grpc.aio.Server, runtime: Runtime) -> None:
    payment_pb2_grpc.add_PaymentServiceServicer_to_server(PaymentApi(runtime), server)


def subscriptions(runtime: Runtime) -> list[Subscription]:
    # Read at start-up, not import: one provider (and its failure count) per instance.
    return events.subscriptions(provider_from_env(os.environ))


SPEC = ServiceSpec(
    name="payment",
    grpc_services=[payment_pb2.DESCRIPTOR.services_by_name["PaymentService"].full_name],
    migrations=Path(__file__).parent / "storage" / "migrations",
    register=register,
    subscriptions=subscriptions,
    unit_of_work=UnitOfWork,
)


def main() -> None:
    run(SPEC)
