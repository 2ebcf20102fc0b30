"""The token key pair on disk, and tokens checked the way the gateway checks them."""

from __future__ import annotations

import json
import stat
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import pytest

from services.user import tokens
from services.user.tokens import ensure_signing_key, issue_token, verify_token

pytestmark = pytest.mark.unit


def test_first_use_makes_a_private_key_and_its_jwks(tmp_path: Path) -> None:
    key = ensure_signing_key(tmp_path / "keys")
    pem = tmp_path / "keys" / tokens.PRIVATE_KEY_FILE
    assert stat.S_IMODE(pem.stat().st_mode) == 0o600
    jwks = json.loads((tmp_path / "keys" / tokens.JWKS_FILE).read_text())
    (jwk,) = jwks["keys"]
    assert {k: jwk[k] for k in ("kty", "crv", "alg", "use", "kid")} == {
        "kty": "EC",
        "crv": "P-256",
        "alg": "ES256",
        "use": "sig",
        "kid": key.kid,
    }
    assert "d" not in jwk  # the private part never leaves the pem
    assert sorted(p.name for p in (tmp_path / "keys").iterdir()) == sorted(
        [tokens.PRIVATE_KEY_FILE, tokens.JWKS_FILE]
    )  # no temporary files left behind


def test_a_token_verifies_against_jwks_json_with_every_claim(tmp_path: Path) -> None:
    key = ensure_signing_key(tmp_path)
    user_id = str(uuid.uuid4())
    before = datetime.now(UTC).replace(microsecond=0)
    token, expires_at = issue_token(key, user_id, "customer", 900)
    claims = verify_token(tmp_path / tokens.JWKS_FILE, token)
    assert claims["iss"] == claims["aud"] == "shopmesh"
    assert (claims["sub"], claims["role"]) == (user_id, "customer")
    assert claims["exp"] - claims["iat"] == 900
    assert claims["iat"] >= before.timestamp()
    assert expires_at == datetime.fromtimestamp(claims["exp"], UTC)
    header = jwt.get_unverified_header(token)
    assert (header["alg"], header["kid"]) == ("ES256", key.kid)


def test_an_expired_token_fails(tmp_path: Path) -> None:
    key = ensure_signing_key(tmp_path)
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    token, _ = issue_token(key, "u", "admin", 900, issued_at=an_hour_ago)
    with pytest.raises(jwt.ExpiredSignatureError):
        verify_token(tmp_path / tokens.JWKS_FILE, token)


def test_a_token_from_another_key_fails(tmp_path: Path) -> None:
    ensure_signing_key(tmp_path / "ours")
    theirs = ensure_signing_key(tmp_path / "theirs")
    token, _ = issue_token(theirs, "u", "admin", 900)
    with pytest.raises(jwt.InvalidTokenError, match="no key with kid"):
        verify_token(tmp_path / "ours" / tokens.JWKS_FILE, token)


def test_a_token_with_a_forged_signature_fails(tmp_path: Path) -> None:
    ours = ensure_signing_key(tmp_path / "ours")
    theirs = ensure_signing_key(tmp_path / "theirs")
    forged = jwt.encode(
        {"iss": "shopmesh", "aud": "shopmesh", "sub": "u", "iat": 0, "exp": 2**40},
        theirs.private_key,
        algorithm="ES256",
        headers={"kid": ours.kid},
    )
    with pytest.raises(jwt.InvalidSignatureError):
        verify_token(tmp_path / "ours" / tokens.JWKS_FILE, forged)


def test_the_key_is_reused_and_old_tokens_still_verify(tmp_path: Path) -> None:
    first = ensure_signing_key(tmp_path)
    token, _ = issue_token(first, "u", "customer", 900)
    jwks = (tmp_path / tokens.JWKS_FILE).read_text()
    again = ensure_signing_key(tmp_path)
    assert again.kid == first.kid
    assert (tmp_path / tokens.JWKS_FILE).read_text() == jwks
    assert verify_token(tmp_path / tokens.JWKS_FILE, token)["sub"] == "u"


def test_a_lost_or_stale_jwks_is_rewritten_from_the_private_key(tmp_path: Path) -> None:
    key = ensure_signing_key(tmp_path)
    jwks_path = tmp_path / tokens.JWKS_FILE
    expected = jwks_path.read_text()
    jwks_path.unlink()
    assert ensure_signing_key(tmp_path).kid == key.kid
    assert jwks_path.read_text() == expected
    jwks_path.write_text('{"keys": []}')
    ensure_signing_key(tmp_path)
    assert jwks_path.read_text() == expected


def test_processes_starting_together_agree_on_one_key(tmp_path: Path) -> None:
    with ThreadPoolExecutor(8) as pool:
        keys = list(pool.map(lambda _: ensure_signing_key(tmp_path / "keys"), range(16)))
    assert len({key.kid for key in keys}) == 1
    (jwk,) = json.loads((tmp_path / "keys" / tokens.JWKS_FILE).read_text())["keys"]
    assert jwk["kid"] == keys[0].kid
    assert len(list((tmp_path / "keys").iterdir())) == 2


def test_a_non_positive_lifetime_is_refused(tmp_path: Path) -> None:
    key = ensure_signing_key(tmp_path)
    with pytest.raises(ValueError, match="positive"):
        issue_token(key, "u", "customer", 0)


def test_the_lifetime_comes_from_the_environment() -> None:
    assert tokens.ttl_from_env({}) == 15 * 60
    assert tokens.ttl_from_env({tokens.TTL_ENV: "60"}) == 60
    for bad in ("0", "-5", "15m"):
        with pytest.raises(ValueError, match=tokens.TTL_ENV):
            tokens.ttl_from_env({tokens.TTL_ENV: bad})
