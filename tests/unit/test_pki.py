"""The per-run CA: certificates verify, carry their SANs, are reused, and do real mTLS."""

from __future__ import annotations

import ipaddress
import socket
import ssl
import threading
from pathlib import Path

import pytest
from cryptography import x509

from shopmesh.pki import ensure_ca, issue_cert

pytestmark = pytest.mark.unit


def test_cert_verifies_against_the_ca_and_has_sans(tmp_path: Path) -> None:
    ca = ensure_ca(tmp_path / "pki")
    issued = issue_cert(ca, "order-1", uris=["spiffe://shopmesh/order"])

    assert issued.cert_path == tmp_path / "pki" / "order-1.crt"
    assert issued.key_path.stat().st_mode & 0o777 == 0o600
    cert = x509.load_pem_x509_certificate(issued.cert_path.read_bytes())
    cert.verify_directly_issued_by(ca.cert)  # raises if not signed by the CA

    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://shopmesh/order"]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_idempotent(tmp_path: Path) -> None:
    ca = ensure_ca(tmp_path)
    first = issue_cert(ca, "user-1").cert_path.read_bytes()
    ca_again = ensure_ca(tmp_path)
    assert ca_again.cert == ca.cert
    assert issue_cert(ca_again, "user-1").cert_path.read_bytes() == first


def test_reissued_when_sans_change_or_ca_is_new(tmp_path: Path) -> None:
    ca = ensure_ca(tmp_path)
    first = issue_cert(ca, "user-1").cert
    other_sans = issue_cert(ca, "user-1", dns_names=["localhost", "user"]).cert
    assert other_sans != first

    # A new CA (old one deleted) must not keep a leaf signed by the old one.
    ca.cert_path.unlink()
    new_ca = ensure_ca(tmp_path)
    assert new_ca.cert != ca.cert
    leaf = issue_cert(new_ca, "user-1", dns_names=["localhost", "user"]).cert
    leaf.verify_directly_issued_by(new_ca.cert)


def test_mutual_tls_handshake(tmp_path: Path) -> None:
    ca = ensure_ca(tmp_path)
    server_cert = issue_cert(ca, "server")
    client_cert = issue_cert(ca, "client")

    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(ca.cert_path))
    server_ctx.load_cert_chain(server_cert.cert_path, server_cert.key_path)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    client_ctx = ssl.create_default_context(cafile=str(ca.cert_path))
    client_ctx.load_cert_chain(client_cert.cert_path, client_cert.key_path)

    peer: list[object] = []
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def serve() -> None:
            conn, _ = listener.accept()
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                peer.append(tls.getpeercert())
                tls.sendall(b"ok")

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            client_ctx.wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            assert tls.recv(2) == b"ok"
        thread.join(timeout=5)

    assert peer
    assert peer[0]
