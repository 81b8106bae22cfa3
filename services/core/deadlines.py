"""The caller's deadline, visible to the code that serves the call.

The interceptor records it for the duration of an RPC; a PostgreSQL transaction then
tells the database itself to give up at that moment (statement_timeout, lock_timeout),
so a statement that waits on a lock is stopped by the server even when the client
side's cancel request never lands."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_deadline: ContextVar[float | None] = ContextVar("rpc_deadline", default=None)


@contextmanager
def bounded_by(seconds: float | None) -> Iterator[None]:
    """Within the block, the work must end `seconds` from now (None: no deadline)."""
    token = _deadline.set(None if seconds is None else time.monotonic() + seconds)
    try:
        yield
    finally:
        _deadline.reset(token)


def remaining() -> float | None:
    """Seconds left before the current deadline (negative once it passed); None
    without one."""
    deadline = _deadline.get()
    return None if deadline is None else deadline - time.monotonic()
