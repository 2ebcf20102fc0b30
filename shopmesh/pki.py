"""A throwaway certificate authority per run, for the sidecars' mTLS.

Everything lives under ``<var>/pki/``: ``ca.crt``/``ca.key`` and ``<name>.crt``/``<name>.key``.
Keys are EC P-256, written PKCS#8 PEM with mode 0600. Both functions are idempotent: they
reuse what is on disk while it is still valid and matches the request, and replace it
otherwise, so ``./dev up`` can call them every time.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_NAME = "ca"
CA_VALIDITY = dt.timedelta(days=365)
CERT_VALIDITY = dt.timedelta(days=30)
# Reissue before expiry so a long-lived dev checkout never hands Envoy a cert about to lapse.
RENEW_BEFORE = dt.timedelta(days=1)
# Tolerate small clock differences between this machine and a container.
BACKDATE = dt.timedelta(minutes=5)


@dataclass(frozen=True)
class CertificateAuthority:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    cert_path: Path
    key_path: Path

    @property
    def directory(self) -> Path:
        return self.cert_path.parent


@dataclass(frozen=True)
class IssuedCert:
    name: str
    cert: x509.Certificate
    cert_path: Path
    key_path: Path
    ca_path: Path


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # Create with 0600 from the start: the key is never world-readable, even briefly.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _load(
    cert_path: Path, key_path: Path
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None:
    """The pair on disk, or None when missing, unreadable, expiring or mismatched."""
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError):
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        return None
    if cert.public_key() != key.public_key():
        return None
    if cert.not_valid_after_utc - RENEW_BEFORE < _now() or cert.not_valid_before_utc > _now():
        return None
    return cert, key


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "shopmesh"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def ensure_ca(directory: Path | str) -> CertificateAuthority:
    """Load the CA in ``directory``, creating it (and the directory) if absent or stale."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / f"{CA_NAME}.crt", directory / f"{CA_NAME}.key"
    loaded = _load(cert_path, key_path)
    if loaded is not None:
        cert, key = loaded
        try:
            is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except x509.ExtensionNotFound:
            is_ca = False
        if is_ca and _issued_by(cert, cert):
            return CertificateAuthority(cert, key, cert_path, key_path)

    key = ec.generate_private_key(ec.SECP256R1())
    name = _name("shopmesh local CA")
    now = _now()
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    # Leaf certificates of a previous CA need no cleanup: issue_cert checks the issuer.
    _write_key(key_path, key)
    _write_cert(cert_path, cert)
    return CertificateAuthority(cert, key, cert_path, key_path)


def _sans(
    dns_names: Sequence[str], ips: Sequence[str], uris: Sequence[str]
) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns_names]
    names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    names += [x509.UniformResourceIdentifier(u) for u in uris]
    return names


def _issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def issue_cert(
    ca: CertificateAuthority,
    name: str,
    dns_names: Sequence[str] = ("localhost",),
    ip: str | Sequence[str] = "127.0.0.1",
    *,
    uris: Sequence[str] = (),
    directory: Path | str | None = None,
) -> IssuedCert:
    """A leaf certificate ``<name>.crt``/``<name>.key`` signed by ``ca``, good for both ends
    of mTLS (server and client auth). Reused when valid, issued by ``ca`` and with the same
    subject alternative names.

    ``uris`` adds URI SANs (e.g. ``spiffe://shopmesh/order``) that Envoy can match on.
    """
    out = Path(directory) if directory is not None else ca.directory
    out.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = out / f"{name}.crt", out / f"{name}.key"
    ips = [ip] if isinstance(ip, str) else list(ip)
    wanted = x509.SubjectAlternativeName(_sans(dns_names, ips, uris))

    loaded = _load(cert_path, key_path)
    if loaded is not None:
        cert, _ = loaded
        try:
            have = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            have = None
        if have == wanted and _issued_by(cert, ca.cert):
            return IssuedCert(name, cert, cert_path, key_path, ca.cert_path)

    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    ca_ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(min(now + CERT_VALIDITY, ca.cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(wanted, critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
        .sign(ca.key, hashes.SHA256())
    )
    _write_key(key_path, key)
    _write_cert(cert_path, cert)
    return IssuedCert(name, cert, cert_path, key_path, ca.cert_path)
