"""ES256 access tokens: the signing key pair on disk, issuing and verifying.

The user service signs; the gateway Envoy verifies with the public key in `jwks.json`,
which it reads only when it starts. So the key pair is made once, by whoever needs it
first, and reused from then on: restarts keep the same key, and tokens issued before a
restart stay valid until they expire.

Layout under `<var>/keys/`: `jwt-signing.pem` (PKCS#8 private key, mode 0600) and
`jwks.json` (`{"keys": [<public JWK with kid, alg, use>]}`).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

ISSUER = "shopmesh"
AUDIENCE = "shopmesh"
ALGORITHM = "ES256"
PRIVATE_KEY_FILE = "jwt-signing.pem"
JWKS_FILE = "jwks.json"
TTL_ENV = "SHOPMESH_TOKEN_TTL"
DEFAULT_TTL_SECONDS = 15 * 60


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private_key: ec.EllipticCurvePrivateKey

    def public_jwk(self) -> dict[str, str]:
        jwk = ECAlgorithm.to_jwk(self.private_key.public_key(), as_dict=True)
        return {**jwk, "kid": self.kid, "alg": ALGORITHM, "use": "sig"}


def keys_dir(var_dir: Path) -> Path:
    """Where an instance with state directory `var_dir` keeps the token keys."""
    return var_dir / "keys"


def ttl_from_env(env: Mapping[str, str] | None = None) -> int:
    """Token lifetime in seconds: $SHOPMESH_TOKEN_TTL, else 15 minutes."""
    raw = (os.environ if env is None else env).get(TTL_ENV, "")
    if not raw:
        return DEFAULT_TTL_SECONDS
    try:
        ttl = int(raw)
    except ValueError:
        ttl = 0
    if ttl <= 0:
        raise ValueError(f"{TTL_ENV} must be a positive number of seconds, got {raw!r}")
    return ttl


def ensure_signing_key(directory: Path) -> SigningKey:
    """The key pair in `directory`, made on first use; `jwks.json` always matches it.

    Safe when several processes start at once: exactly one private key wins.
    """
    directory.mkdir(parents=True, exist_ok=True)
    pem_path = directory / PRIVATE_KEY_FILE
    try:
        pem = pem_path.read_bytes()
    except FileNotFoundError:
        pem = _create_private_key(pem_path)
    private_key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(private_key, ec.EllipticCurvePrivateKey) or not isinstance(
        private_key.curve, ec.SECP256R1
    ):
        raise ValueError(f"{pem_path} is not an EC P-256 private key")
    key = SigningKey(kid=_thumbprint(private_key.public_key()), private_key=private_key)
    jwks = json.dumps({"keys": [key.public_jwk()]}, indent=2, sort_keys=True) + "\n"
    jwks_path = directory / JWKS_FILE
    with contextlib.suppress(FileNotFoundError):
        if jwks_path.read_text() == jwks:
            return key
    os.replace(_write_temp(directory, jwks.encode(), mode=0o644), jwks_path)
    return key


def issue_token(
    key: SigningKey,
    user_id: str,
    role: str,
    ttl_seconds: int,
    *,
    issued_at: datetime | None = None,
) -> tuple[str, datetime]:
    """A signed access token for `user_id` acting as `role`, and when it expires."""
    if ttl_seconds <= 0:
        raise ValueError(f"ttl_seconds must be positive, got {ttl_seconds}")
    # JWT times are whole seconds; return exactly the instant the `exp` claim says.
    iat = (issued_at or datetime.now(UTC)).replace(microsecond=0)
    expires_at = iat + timedelta(seconds=ttl_seconds)
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": user_id,
        "role": str(role),
        "iat": iat,
        "exp": expires_at,
    }
    token = jwt.encode(claims, key.private_key, algorithm=ALGORITHM, headers={"kid": key.kid})
    return token, expires_at


def verify_token(jwks_path: Path, token: str) -> dict[str, Any]:
    """The claims of `token` if a key in `jwks_path` signed it and it is valid now, as
    the gateway checks it; raises jwt.InvalidTokenError (or a subclass) otherwise."""
    jwks = jwt.PyJWKSet.from_json(jwks_path.read_text())
    kid = jwt.get_unverified_header(token).get("kid")
    try:
        jwk = jwks[str(kid)]
    except KeyError:
        raise jwt.InvalidTokenError(f"no key with kid {kid!r} in {jwks_path}") from None
    return jwt.decode(
        token,
        jwk,
        algorithms=[ALGORITHM],
        audience=AUDIENCE,
        issuer=ISSUER,
        options={"require": ["iss", "aud", "sub", "iat", "exp"]},
    )


def _thumbprint(public_key: ec.EllipticCurvePublicKey) -> str:
    """RFC 7638 JWK thumbprint: a kid that is a function of the key alone."""
    jwk = ECAlgorithm.to_jwk(public_key, as_dict=True)
    canonical = json.dumps(
        {name: jwk[name] for name in ("crv", "kty", "x", "y")}, separators=(",", ":")
    )
    digest = hashlib.sha256(canonical.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _create_private_key(path: Path) -> bytes:
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    temp = _write_temp(path.parent, pem, mode=0o600)
    try:
        # link, unlike rename, refuses to replace: a key another process made first wins.
        os.link(temp, path)
    except FileExistsError:
        return path.read_bytes()
    finally:
        temp.unlink()
    return pem


def _write_temp(directory: Path, data: bytes, mode: int) -> Path:
    """A complete, synced file in `directory`, ready to be renamed or linked into place."""
    fd, name = tempfile.mkstemp(dir=directory, prefix=".", suffix=".tmp")
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as file:
            os.fchmod(file.fileno(), mode)
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path
