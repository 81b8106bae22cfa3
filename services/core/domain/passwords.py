"""Password hashing with bcrypt, always off the event loop, with admission control.

bcrypt costs about 250 ms of CPU at cost 12 and releases the GIL, so it runs in a
bounded thread pool: other RPCs keep being served while logins are checked.

A storm of logins would queue in that pool far beyond any caller's patience, and
each queued check would then run for a caller that has already given up: checks go
through a WorkQueue (services.core.domain.admission), which refuses at once those
that cannot end within their call's deadline."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from typing import TypeVar

import bcrypt

from services.core.domain.admission import WorkQueue

# bcrypt reads at most 72 bytes; bcrypt 5 refuses longer input instead of truncating.
# New passwords longer than that are rejected (see validate_new_password) rather than
# silently weakened.
BCRYPT_MAX_BYTES = 72
MIN_PASSWORD_LENGTH = 8

# Nice value of the bcrypt threads (0 is the default, 19 the lowest priority).
BCRYPT_NICE = 10

T = TypeVar("T")


def password_problem(password: str) -> str | None:
    """Why `password` cannot become a password, or None when it can."""
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"must be at least {MIN_PASSWORD_LENGTH} characters"
    if len(password.encode("utf-8")) > BCRYPT_MAX_BYTES:
        return f"must be at most {BCRYPT_MAX_BYTES} bytes in UTF-8"
    return None


def _yield_to_the_event_loop() -> None:
    """Lowers the calling bcrypt thread's scheduling priority (Linux: a thread is a
    task with its own nice value): on a busy machine the event loop thread, which
    serves every other RPC, then gets the cores first, and a login storm costs cheap
    RPCs little latency. Elsewhere a no-op."""
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BCRYPT_NICE)


class PasswordHasher:
    def __init__(self, rounds: int, max_workers: int) -> None:
        self._rounds = rounds
        self._executor = ThreadPoolExecutor(
            max_workers, thread_name_prefix="bcrypt", initializer=_yield_to_the_event_loop
        )
        # One hash at start: the decoy every failed login checks against, and the
        # first measure of a check's cost, so that the first storm is estimated.
        began = time.perf_counter()
        self._decoy_hash = bcrypt.hashpw(secrets.token_bytes(16), bcrypt.gensalt(rounds))
        self.queue = WorkQueue("password checking", max_workers, time.perf_counter() - began)
        # With tracing on (services.core.tracing), a span around each hash and check.
        self.trace_work: Callable[[str], AbstractContextManager[object]] | None = None

    async def hash(self, password: str) -> str:
        hashed = await self._run(bcrypt.hashpw, password.encode(), bcrypt.gensalt(self._rounds))
        return hashed.decode("ascii")

    async def verify(self, password: str, hashed: str | None) -> bool:
        """True when `password` matches `hashed`. With no hash (unknown account, no
        password set), or a password bcrypt cannot check, it still spends one bcrypt
        check against a decoy, so that every failure takes about the same time."""
        candidate = password.encode()
        if hashed is None or len(candidate) > BCRYPT_MAX_BYTES:
            await self._run(bcrypt.checkpw, candidate[:BCRYPT_MAX_BYTES], self._decoy_hash)
            return False
        return await self._run(bcrypt.checkpw, candidate, hashed.encode("ascii"))

    def admit(self) -> None:
        """Raises Overloaded when a password check could not end within the current
        call's deadline: for callers with work to skip when it cannot."""
        self.queue.admit()

    async def _run(self, function: Callable[..., T], *args: object) -> T:
        if self.trace_work is None:
            return await self._admitted(function, *args)
        # The span covers the wait for a thread too: both are the call's time.
        with self.trace_work(f"bcrypt {function.__name__}"):
            return await self._admitted(function, *args)

    async def _admitted(self, function: Callable[..., T], *args: object) -> T:
        self.queue.admit()
        self.queue.enter()
        # Counted out when the thread is done (or the check is dropped unstarted),
        # not when the caller stops waiting: a check that runs on keeps its thread.
        future = self._executor.submit(self._timed, function, *args)
        future.add_done_callback(lambda _: self.queue.leave())
        return await asyncio.wrap_future(future)

    def _timed(self, function: Callable[..., T], *args: object) -> T:
        with self.queue.timed():
            return function(*args)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
