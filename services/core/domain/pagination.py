"""Keyset pagination: page sizes and opaque, tamper-evident page tokens.

A token holds the sort key of the last row a page returned, a digest of the query it
belongs to (store, filters) and an HMAC over both. A token that was altered, forged
or used with another store or other filters is INVALID_ARGUMENT."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from collections.abc import Callable
from typing import Any, TypeVar

from services.core.domain.errors import InvalidArgument

_MAC_BYTES = 16

T = TypeVar("T")


class PageTokenCodec:
    def __init__(self, secret: str) -> None:
        # Without a configured secret, a random one: tokens then live as long as the process.
        self._key = secret.encode() if secret else secrets.token_bytes(32)

    def encode(self, query: dict[str, Any], position: list[Any]) -> str:
        body = json.dumps([_query_digest(query), position], separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(body + self._mac(body)).decode("ascii").rstrip("=")

    def decode(self, token: str, query: dict[str, Any]) -> list[Any]:
        """The position stored in `token`, which must have been made for `query`."""
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            raise _invalid("is not a page token of this API") from None
        body, mac = raw[:-_MAC_BYTES], raw[-_MAC_BYTES:]
        if len(raw) <= _MAC_BYTES or not hmac.compare_digest(mac, self._mac(body)):
            raise _invalid("is not a page token of this API")
        digest, position = json.loads(body)
        if digest != _query_digest(query):
            raise _invalid("belongs to another store or other filters")
        return list(position)

    def cut(
        self, rows: list[T], size: int, query: dict[str, Any], position: Callable[[T], list[Any]]
    ) -> tuple[list[T], str]:
        """A page from `rows` fetched with LIMIT size + 1: its first `size` rows and the
        token of the next page, made from `position(last row)`; "" when none follows."""
        if len(rows) <= size:
            return rows, ""
        page = rows[:size]
        return page, self.encode(query, position(page[-1]))

    def _mac(self, body: bytes) -> bytes:
        return hmac.new(self._key, body, hashlib.sha256).digest()[:_MAC_BYTES]


def _query_digest(query: dict[str, Any]) -> str:
    canonical = json.dumps(query, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(canonical).hexdigest()[:16]


def _invalid(problem: str) -> InvalidArgument:
    return InvalidArgument.of("page_token", f"{problem}; start again without a page_token")


def resolve_page_size(page_size: int, *, default: int, maximum: int) -> int:
    """AIP-158: 0 means the default, above the maximum is lowered to it, negative is
    an error."""
    if page_size < 0:
        raise InvalidArgument.of("page_size", "must not be negative")
    if page_size == 0:
        return default
    return min(page_size, maximum)
