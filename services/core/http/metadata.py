"""What an HTTP request's headers become as gRPC metadata, and gRPC response
metadata as HTTP headers: the same for both protocols of the gateway."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Iterable
from typing import Any

from services.core.rpc.callers import CLIENT_ADDRESS_KEY

# Request headers that are no metadata: HTTP's own (hop by hop, framing, content
# negotiation), the Connect protocol's, and the client address only the gateway sets.
_NOT_METADATA = frozenset(
    {
        "host",
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "upgrade",
        "te",
        "trailer",
        "expect",
        "content-type",
        "content-length",
        "content-encoding",
        "accept",
        "accept-encoding",
        "user-agent",
        CLIENT_ADDRESS_KEY,
    }
)
RESERVED_PREFIXES = ("grpc-", "connect-", ":")
# What gRPC accepts as a metadata key; HTTP allows more in a header name (`x!y`).
_METADATA_KEY = re.compile(r"^[0-9a-z_.-]+$")


def metadata_from(
    headers: Iterable[tuple[str, str]], client_host: str | None
) -> list[tuple[str, str | bytes]]:
    """The call's gRPC metadata: the caller's headers (lower-case names; binary `-bin`
    ones decoded from base64, as the Connect protocol sends them) and the caller's
    real address, which the gRPC server would otherwise see as this process's."""
    metadata: list[tuple[str, str | bytes]] = []
    for key, value in headers:
        if key in _NOT_METADATA or key.startswith(RESERVED_PREFIXES):
            continue
        if not _METADATA_KEY.match(key):
            continue  # gRPC would refuse the whole call for it
        if key.endswith("-bin"):
            try:
                metadata.append((key, base64.b64decode(value + "==")))
            except (binascii.Error, ValueError):
                continue  # not base64: no metadata the server could read
        elif value.isascii() and value.isprintable():
            metadata.append((key, value))
    if client_host:
        metadata.append((CLIENT_ADDRESS_KEY, client_host))
    return metadata


def copy_metadata(metadata: Any, add: Callable[[str, str], None]) -> None:
    """Text response metadata as headers (gRPC's own keys stay behind)."""
    for key, value in metadata or ():
        if isinstance(value, str) and not key.startswith(RESERVED_PREFIXES):
            add(key, value)
