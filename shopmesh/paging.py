"""Opaque page tokens for keyset pagination: the sort key of the last row seen."""

from __future__ import annotations

import base64
import binascii
import json

from shopmesh.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 20


def page_size(requested: int) -> int:
    return requested or DEFAULT_PAGE_SIZE


def encode(*key: str) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(key)).encode()).decode()


def decode(token: str, parts: int) -> tuple[str, ...] | None:
    """The key in `token`, None for the first page; InvalidArgument if it is not ours."""
    if not token:
        return None
    try:
        key = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise InvalidArgument("page_token is not a token this service issued") from None
    if not isinstance(key, list) or len(key) != parts or not all(isinstance(k, str) for k in key):
        raise InvalidArgument("page_token is not a token this service issued")
    return tuple(key)
