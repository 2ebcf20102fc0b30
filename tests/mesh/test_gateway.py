"""The gateway with real Envoy and real services: grpcurl, JSON, tokens, limits, mTLS.

One mesh for the module. Its rate limit is low (a bucket of 40, refilled 20 a second) so a
burst can exceed it; the other tests here make a few calls a second and stay under it.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import Future
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from grpc_health.v1 import health_pb2, health_pb2_grpc
from shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from shop.user.v1 import user_pb2, user_pb2_grpc

from services.user import tokens
from shopmesh import pki
from shopmesh.envoy.layout import spiffe_id
from tests.support.envoymesh import NO_PROXY, PASSWORD, Customer, RunningMesh, running_mesh

pytestmark = pytest.mark.integration

RATE = 20
BURST = 40
SHOP_SERVICES = [
    "shop.inventory.v1.InventoryService",
    "shop.notification.v1.NotificationService",
    "shop.order.v1.OrderService",
    "shop.payment.v1.PaymentService",
    "shop.user.v1.UserService",
]


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningMesh]:
    environ = {"SHOPMESH_GATEWAY_RPS": str(RATE), "SHOPMESH_GATEWAY_BURST": str(BURST)}
    with running_mesh(tmp_path_factory.mktemp("gateway") / "var", environ) as running:
        yield running


@pytest.fixture(scope="module")
def customer(mesh: RunningMesh) -> Customer:
    return mesh.customer()


def grpcurl(mesh: RunningMesh, *args: str, data: Any = None, token: str = "") -> Any:
    """Run the real grpcurl against the gateway; JSON output parsed, or the text."""
    command = ["grpcurl", "-plaintext", "-max-time", "10"]
    if token:
        command += ["-H", f"authorization: Bearer {token}"]
    if data is not None:
        command += ["-d", json.dumps(data)]
    proc = subprocess.run(
        [*command, mesh.gateway, *args], capture_output=True, text=True, timeout=30, check=False
    )
    assert proc.returncode == 0, f"grpcurl {' '.join(args)}: {proc.stderr}"
    return json.loads(proc.stdout) if proc.stdout.startswith("{") else proc.stdout


def test_grpcurl_lists_describes_and_shops_through_the_gateway(mesh: RunningMesh) -> None:
    listed = grpcurl(mesh, "list").split()
    assert sorted(listed) == sorted(
        [*SHOP_SERVICES, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"]
    )
    for service in SHOP_SERVICES:
        assert f"{service} is a service:" in grpcurl(mesh, "describe", service)

    email = f"g-{uuid.uuid4().hex[:10]}@example.com"
    account = {"email": email, "password": PASSWORD, "name": "Grace"}
    registered = grpcurl(mesh, "shop.user.v1.UserService/Register", data=account)
    login = {"email": email, "password": PASSWORD}
    session = grpcurl(mesh, "shop.user.v1.UserService/Login", data=login)
    token = session["accessToken"]
    assert session["user"]["userId"] == registered["user"]["userId"]

    order = {
        "idempotency_key": f"grpcurl-{uuid.uuid4().hex}",
        "lines": [{"product_id": "sku-espresso", "quantity": 2}],
    }
    placed = grpcurl(mesh, "shop.order.v1.OrderService/PlaceOrder", data=order, token=token)
    order_id = placed["order"]["orderId"]
    read = grpcurl(
        mesh, "shop.order.v1.OrderService/GetOrder", data={"order_id": order_id}, token=token
    )
    assert read["order"]["orderId"] == order_id
    assert read["order"]["userId"] == registered["user"]["userId"]
    assert read["order"]["lines"][0]["productId"] == "sku-espresso"

    assert grpcurl(mesh, "grpc.health.v1.Health/Check") == {"status": "SERVING"}
    by_name = {"service": "shop.order.v1.OrderService"}
    assert grpcurl(mesh, "grpc.health.v1.Health/Check", data=by_name) == {"status": "SERVING"}


def _http(mesh: RunningMesh, path: str, token: str = "", body: Any = None) -> tuple[int, Any]:
    request = urllib.request.Request(
        f"http://{mesh.gateway}{path}",
        data=None if body is None else json.dumps(body).encode(),
        method="GET" if body is None else "POST",
        headers={"authorization": f"Bearer {token}"} if token else {},
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        text = error.read().decode()
        return error.code, json.loads(text) if text.startswith("{") else text


def test_json_transcoding_with_a_bearer_token(mesh: RunningMesh, customer: Customer) -> None:
    status, product = _http(mesh, "/v1/products/sku-espresso", customer.token)
    assert status == 200
    assert product["product"]["productId"] == "sku-espresso"
    # Upstream gRPC errors come back as HTTP status + {"code", "message"}.
    status, missing = _http(mesh, "/v1/products/sku-nothing", customer.token)
    assert (status, missing["code"]) == (404, grpc.StatusCode.NOT_FOUND.value[0])
    status, _ = _http(mesh, "/v1/products/sku-espresso")
    assert status == 401
    status, session = _http(mesh, "/v1/login", body={"email": customer.email, "password": PASSWORD})
    assert (status, session["user"]["userId"]) == (200, customer.user_id)


def _get_user(mesh: RunningMesh, user_id: str, metadata: Any = ()) -> user_pb2.GetUserResponse:
    stub = user_pb2_grpc.UserServiceStub(mesh.channel)
    reply: user_pb2.GetUserResponse = stub.GetUser(
        user_pb2.GetUserRequest(user_id=user_id), metadata=metadata, timeout=10
    )
    return reply


def _bearer(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


def _code(call: Any) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as failure:
        call()
    code: grpc.StatusCode = failure.value.code()
    return code


def test_missing_expired_and_foreign_tokens_are_unauthenticated(
    mesh: RunningMesh, customer: Customer
) -> None:
    assert _get_user(mesh, customer.user_id, customer.metadata).user.email == customer.email

    key = tokens.ensure_signing_key(tokens.keys_dir(mesh.var))  # the user service's key
    expired, _ = tokens.issue_token(
        key, customer.user_id, "customer", 60, issued_at=datetime.now(UTC) - timedelta(hours=2)
    )
    # Same kid, another key: the signature cannot verify.
    impostor = tokens.SigningKey(key.kid, ec.generate_private_key(ec.SECP256R1()))
    forged, _ = tokens.issue_token(impostor, customer.user_id, "admin", 600)
    stranger = tokens.SigningKey("other", impostor.private_key)
    unknown_kid, _ = tokens.issue_token(stranger, customer.user_id, "admin", 600)

    for metadata in ((), _bearer(expired), _bearer(forged), _bearer(unknown_kid), _bearer("x")):
        code = _code(lambda m=metadata: _get_user(mesh, customer.user_id, m))
        assert code == grpc.StatusCode.UNAUTHENTICATED, metadata


def test_client_sent_identity_headers_are_replaced_or_dropped(
    mesh: RunningMesh, customer: Customer
) -> None:
    other = mesh.customer()
    spoof = (("x-shop-user-id", other.user_id), ("x-shop-role", "admin"))
    # With a token, the verified `sub` wins: the victim's record stays out of reach...
    code = _code(lambda: _get_user(mesh, other.user_id, customer.metadata + spoof))
    assert code == grpc.StatusCode.NOT_FOUND
    # ...and the caller is still itself.
    mine = _get_user(mesh, customer.user_id, customer.metadata + spoof)
    assert mine.user.user_id == customer.user_id

    # On a public route the headers are dropped: the user service sees no identity.
    before = len(mesh.sidecar_log("user-1"))
    stub = user_pb2_grpc.UserServiceStub(mesh.channel)
    stub.Login(
        user_pb2.LoginRequest(email=customer.email, password=PASSWORD), metadata=spoof, timeout=10
    )
    deadline = time.monotonic() + 5  # access logs are flushed every second
    logins: list[dict[str, Any]] = []
    while not logins and time.monotonic() < deadline:
        time.sleep(0.2)
        logins = [e for e in mesh.sidecar_log("user-1")[before:] if e["path"].endswith("/Login")]
    assert logins, "the Login never reached user-1's sidecar log"
    assert logins[-1]["user"] is None


def _mtls_channel(mesh: RunningMesh, instance: str, cert: pki.IssuedCert) -> grpc.Channel:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=(mesh.var / "pki" / "ca.crt").read_bytes(),
        private_key=cert.key_path.read_bytes(),
        certificate_chain=cert.cert_path.read_bytes(),
    )
    port = mesh.mesh.topology.instance(instance).ingress_port
    return grpc.secure_channel(f"127.0.0.1:{port}", credentials, options=NO_PROXY)


def _health(channel: grpc.Channel) -> int:
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
    return int(reply.status)


def test_sidecar_ingress_accepts_only_mesh_peers_over_mtls(
    mesh: RunningMesh, tmp_path: Path
) -> None:
    mesh_ca = pki.ensure_ca(mesh.var / "pki")
    gateway = pki.issue_cert(mesh_ca, "gateway", uris=[spiffe_id("gateway")])
    assert (
        _health(_mtls_channel(mesh, "inventory-1", gateway))
        == health_pb2.HealthCheckResponse.SERVING
    )

    # Plaintext, a certificate from another CA, and a mesh certificate of a workload that
    # is not among inventory's callers: all refused.
    port = mesh.mesh.topology.instance("inventory-1").ingress_port
    plaintext = grpc.insecure_channel(f"127.0.0.1:{port}", options=NO_PROXY)
    foreign_ca = pki.ensure_ca(tmp_path / "foreign")
    foreign = pki.issue_cert(foreign_ca, "gateway", uris=[spiffe_id("gateway")])
    payment = pki.issue_cert(mesh_ca, "payment-1", uris=[spiffe_id("payment")])
    for channel in (
        plaintext,
        _mtls_channel(mesh, "inventory-1", foreign),
        _mtls_channel(mesh, "inventory-1", payment),
    ):
        assert _code(lambda c=channel: _health(c)) == grpc.StatusCode.UNAVAILABLE


def test_a_burst_above_the_rate_limit_is_resource_exhausted_and_not_retried(
    mesh: RunningMesh, customer: Customer
) -> None:
    time.sleep(BURST / RATE)  # a full bucket, whatever ran before
    retries = "cluster.inventory.upstream_rq_retry$"
    before = mesh.stats(retries).get("cluster.inventory.upstream_rq_retry", 0)
    stub = inventory_pb2_grpc.InventoryServiceStub(mesh.channel)
    request = inventory_pb2.GetProductRequest(product_id="sku-espresso")
    calls: list[Future[Any]] = [
        stub.GetProduct.future(request, metadata=customer.metadata, timeout=10)
        for _ in range(3 * BURST)
    ]
    codes = []
    for call in calls:
        try:
            call.result()
            codes.append(grpc.StatusCode.OK)
        except grpc.RpcError as error:
            codes.append(error.code())
    limited = codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert limited >= BURST // 2, codes
    assert set(codes) == {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert (
        mesh.stats("rate_limited$")["gateway_rate_limit.http_local_rate_limit.rate_limited"]
        >= limited
    )
    after = mesh.stats(retries).get("cluster.inventory.upstream_rq_retry", 0)
    assert after == before
    time.sleep(BURST / RATE)  # leave a full bucket behind
