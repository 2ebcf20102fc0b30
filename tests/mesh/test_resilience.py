"""Failures injected into one instance of a real mesh, and what the gateway makes of them.

One mesh for the module, with a high rate limit (loops of reads must not be limited) and
small circuit-breaker thresholds (so a few dozen calls overflow them). Each test switches
its fault off again, also when it fails.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any

import grpc
import pytest
from shop.order.v1 import order_pb2, order_pb2_grpc
from shop.payment.v1 import payment_pb2, payment_pb2_grpc
from shop.user.v1 import user_pb2, user_pb2_grpc

from shopmesh.envoy import admin
from shopmesh.envoy.settings import Settings
from tests.support.envoymesh import Customer, RunningMesh, running_mesh, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.fault]

MAX_REQUESTS = 20
MAX_PENDING = 10
SETTINGS = Settings()


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningMesh]:
    environ = {
        "SHOPMESH_GATEWAY_RPS": "5000",
        "SHOPMESH_GATEWAY_BURST": "5000",
        "SHOPMESH_ENVOY_MAX_REQUESTS": str(MAX_REQUESTS),
        "SHOPMESH_ENVOY_MAX_PENDING": str(MAX_PENDING),
    }
    with running_mesh(tmp_path_factory.mktemp("resilience") / "var", environ) as running:
        yield running


@pytest.fixture(scope="module")
def customer(mesh: RunningMesh) -> Customer:
    return mesh.customer()


@pytest.fixture
def faults(mesh: RunningMesh) -> Iterator[list[str]]:
    """Instances whose fault filter a test switched on; cleared afterwards."""
    touched: list[str] = []
    yield touched
    for instance in touched:
        admin.fault_clear(mesh.sidecar_admin(instance))


def read_payments(mesh: RunningMesh, who: Customer, count: int) -> Counter[grpc.StatusCode]:
    """``count`` ListPayments through the gateway, one after another."""
    stub = payment_pb2_grpc.PaymentServiceStub(mesh.channel)
    codes: Counter[grpc.StatusCode] = Counter()
    for _ in range(count):
        request = payment_pb2.ListPaymentsRequest(order_id=str(uuid.uuid4()))
        try:
            stub.ListPayments(request, metadata=who.metadata, timeout=5)
            codes[grpc.StatusCode.OK] += 1
        except grpc.RpcError as error:
            codes[error.code()] += 1
    return codes


def grpc_timeout_ms(header: str) -> float:
    """A grpc-timeout header value ("1000m", "1S", "999999u") in milliseconds."""
    units = {"H": 3_600_000.0, "M": 60_000.0, "S": 1000.0, "m": 1.0, "u": 1e-3, "n": 1e-6}
    return int(header[:-1]) * units[header[-1]]


def reads_logged(mesh: RunningMesh, instance: str) -> int:
    """ListPayments calls in ``instance``'s sidecar access log (health checks are not)."""
    return sum(e["path"].endswith("/ListPayments") for e in mesh.sidecar_log(instance))


def reads_after(mesh: RunningMesh, instance: str, before: int) -> int:
    time.sleep(1.5)  # access logs are flushed every second
    return reads_logged(mesh, instance) - before


def payment_host(mesh: RunningMesh, instance: str) -> admin.HostStatus:
    return mesh.hosts(mesh.gateway_admin, "payment")[instance]


def wait_back(mesh: RunningMesh, instance: str) -> None:
    """The gateway sends ``instance`` traffic again (ejection times grow with each one)."""
    timeout = SETTINGS.max_ejection_time + 10
    wait_for(f"{instance} healthy again", lambda: payment_host(mesh, instance).healthy, timeout)


def test_an_aborting_instance_is_ejected_and_returns_once_fixed(
    mesh: RunningMesh, customer: Customer, faults: list[str]
) -> None:
    ejections = "cluster.payment.outlier_detection.ejections_enforced_total"
    before = mesh.stats(ejections + "$")[ejections]
    admin.fault_abort(mesh.sidecar_admin("payment-1"), percent=100, grpc_status=14)
    faults.append("payment-1")

    codes = read_payments(mesh, customer, 200)
    assert codes[grpc.StatusCode.OK] >= 198, codes  # retries cover the first failures
    assert mesh.stats(ejections + "$")[ejections] > before
    clusters = admin.request(mesh.gateway_admin, "/clusters")
    ingress = mesh.mesh.topology.instance("payment-1").ingress_port
    assert f"payment::127.0.0.1:{ingress}::health_flags::/failed_outlier_check" in clusters
    assert payment_host(mesh, "payment-2").healthy
    # Still out after a passing health check (they skip the fault filter, run every second).
    time.sleep(SETTINGS.health_interval * 1.5)
    assert payment_host(mesh, "payment-1").ejected

    admin.fault_clear(mesh.sidecar_admin("payment-1"))
    wait_back(mesh, "payment-1")
    before = reads_logged(mesh, "payment-1")
    assert read_payments(mesh, customer, 20)[grpc.StatusCode.OK] == 20
    assert reads_after(mesh, "payment-1", before) > 0


def test_a_killed_instance_costs_no_failed_reads_and_rejoins_after_restart(
    mesh: RunningMesh, customer: Customer
) -> None:
    os.kill(mesh.pid("payment-2"), signal.SIGKILL)
    try:
        codes = read_payments(mesh, customer, 200)
        assert codes[grpc.StatusCode.OK] >= 198, codes
        # Ejected for failing calls, and failing its health checks too.
        wait_for(
            "payment-2 failing its health checks",
            lambda: "failed_active_health_check" in payment_host(mesh, "payment-2").flags,
            timeout=10,
        )
    finally:
        mesh.supervisorctl("start", "payment-2")
    wait_back(mesh, "payment-2")
    assert read_payments(mesh, customer, 20)[grpc.StatusCode.OK] == 20


def test_resource_exhausted_from_an_instance_is_not_retried(
    mesh: RunningMesh, customer: Customer, faults: list[str]
) -> None:
    retries = "cluster.payment.upstream_rq_retry"
    before = mesh.stats(retries + "$")[retries]
    admin.fault_abort(mesh.sidecar_admin("payment-1"), percent=100, grpc_status=8)
    faults.append("payment-1")
    codes = read_payments(mesh, customer, 20)
    assert codes[grpc.StatusCode.RESOURCE_EXHAUSTED] > 0, codes
    assert set(codes) == {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert mesh.stats(retries + "$")[retries] == before
    assert payment_host(mesh, "payment-1").healthy  # neither a 5xx nor a gateway failure


def test_calls_beyond_the_circuit_breaker_are_rejected_fast(
    mesh: RunningMesh, customer: Customer, faults: list[str]
) -> None:
    # max_requests overflow counts as upstream_rq_active_overflow in Envoy 1.40.
    overflow = r"cluster\.user\.upstream_rq_(pending|active)_overflow$"
    before = sum(mesh.stats(overflow).values())
    admin.fault_delay(mesh.sidecar_admin("user-1"), percent=100, delay_ms=2000)
    faults.append("user-1")

    stub = user_pb2_grpc.UserServiceStub(mesh.channel)
    request = user_pb2.GetUserRequest(user_id=customer.user_id)
    started = time.monotonic()
    finished: dict[int, float] = {}
    calls: list[Future[Any]] = []
    for n in range(3 * MAX_REQUESTS):
        call = stub.GetUser.future(request, metadata=customer.metadata, timeout=10)
        call.add_done_callback(lambda _, n=n: finished.setdefault(n, time.monotonic() - started))
        calls.append(call)
    codes = []
    for call in calls:
        try:
            call.result()
            codes.append(grpc.StatusCode.OK)
        except grpc.RpcError as error:
            codes.append(error.code())
    wait_for("every call's completion time", lambda: len(finished) == len(calls), timeout=5)

    rejected = [finished[n] for n, c in enumerate(codes) if c == grpc.StatusCode.UNAVAILABLE]
    served = [finished[n] for n, c in enumerate(codes) if c == grpc.StatusCode.OK]
    assert len(rejected) + len(served) == len(calls), codes
    assert len(rejected) >= MAX_REQUESTS, codes
    assert len(served) >= MAX_REQUESTS // 2, codes
    assert min(served) >= 2.0  # the delay held these, while the overflow was refused at once
    assert max(rejected) < 1.0
    assert sum(mesh.stats(overflow).values()) - before >= len(rejected)


def test_a_slow_dependency_makes_place_order_miss_its_deadline_in_time(
    mesh: RunningMesh, customer: Customer, faults: list[str]
) -> None:
    # Inventory is PlaceOrder's one sync call (order does not call user).
    admin.fault_delay(mesh.sidecar_admin("inventory-1"), percent=100, delay_ms=3000)
    faults.append("inventory-1")
    before = len(mesh.sidecar_log("order-1"))
    stub = order_pb2_grpc.OrderServiceStub(mesh.channel)
    request = order_pb2.PlaceOrderRequest(
        idempotency_key=f"deadline-{uuid.uuid4().hex}",
        lines=[order_pb2.OrderLineInput(product_id="sku-espresso", quantity=1)],
    )
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as failure:
        stub.PlaceOrder(request, metadata=customer.metadata, timeout=1.0)
    elapsed = time.monotonic() - started
    assert failure.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert elapsed < 1.5

    # order-1's egress call to inventory carried what was left of the client's second,
    # and was given up when that ran out.
    def egress_calls() -> list[dict[str, Any]]:
        entries = mesh.sidecar_log("order-1")[before:]
        path = "/shop.inventory.v1.InventoryService/GetProduct"
        return [e for e in entries if e["path"] == path]

    wait_for("order-1's GetProduct in its sidecar log", lambda: bool(egress_calls()), timeout=5)
    (call,) = egress_calls()
    budget_ms = grpc_timeout_ms(call["grpc_timeout"])
    # Not order's own 2 s limit. gRPC rounds grpc-timeout up (a 1 s deadline leaves the
    # client as "1010m"), hence the margin.
    assert 0 < budget_ms < 1100, call
    # Whichever hop's timer fired first (order's client, its sidecar, inventory's sidecar),
    # the call ended unanswered when the budget ran out, not 3 s later.
    assert call["grpc_status"] != "OK", call
    assert call["duration_ms"] <= budget_ms + 100, call


def test_an_instance_that_turns_not_serving_stops_getting_traffic(
    mesh: RunningMesh, customer: Customer
) -> None:
    pid = mesh.pid("payment-1")
    os.kill(pid, signal.SIGUSR1)  # shopmesh.server: health NOT_SERVING, calls still served
    try:
        wait_for(
            "the gateway to mark payment-1 unhealthy",
            lambda: "failed_active_health_check" in payment_host(mesh, "payment-1").flags,
            timeout=SETTINGS.health_no_traffic_interval + 3,
        )
        before = reads_logged(mesh, "payment-1")
        assert read_payments(mesh, customer, 40)[grpc.StatusCode.OK] == 40
        assert reads_after(mesh, "payment-1", before) == 0
    finally:
        os.kill(pid, signal.SIGUSR2)
    wait_back(mesh, "payment-1")
