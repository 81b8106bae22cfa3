"""Whether the caller asked to read what was last written.

Reads that may be served by the read replica (services.core.db.replica) can lag the
primary by up to read_replica_max_lag_seconds. A caller that sends the request
metadata `x-commerce-consistency: strong` reads the primary instead; the RPC guard
records that for the duration of the call."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

# The request metadata key, and the value that asks for the primary.
METADATA_KEY = "x-commerce-consistency"
STRONG = "strong"

_strong: ContextVar[bool] = ContextVar("strong_consistency", default=False)


@contextmanager
def required(strong_reads: bool) -> Iterator[None]:
    """Within the block, every read goes to the primary when `strong_reads`."""
    token = _strong.set(strong_reads)
    try:
        yield
    finally:
        _strong.reset(token)


def strong() -> bool:
    """Whether the current call asked for reads of the primary."""
    return _strong.get()
