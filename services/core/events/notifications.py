"""PostgreSQL notifications (LISTEN): how a process learns that another one
committed events or placed them in the feed, without polling.

A connection of its own, outside the pool (a listening connection is never given
back), reconnected with backoff when the database drops it. Notifications sent while
it was away are lost, so every callback is also called once it is back: whoever
listens looks again."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import Any

import asyncpg
from sqlalchemy.engine import URL

logger = logging.getLogger(__name__)

# The channels the outbox's trigger and the relay notify.
OUTBOX_CHANNEL = "commerce_outbox"
FEED_CHANNEL = "commerce_feed"

# How often a quiet connection is checked (a vanished server sends no FIN).
CHECK_SECONDS = 10.0
MAX_BACKOFF_SECONDS = 5.0


def asyncpg_dsn(url: URL) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


class DatabaseNotifications:
    """Calls `callbacks[channel]()` for each notification on `channel`."""

    def __init__(
        self,
        url: URL,
        callbacks: Mapping[str, Callable[[], None]],
        *,
        connect_timeout: float = 5.0,
    ) -> None:
        self._dsn = asyncpg_dsn(url)
        self._callbacks = dict(callbacks)
        self._connect_timeout = connect_timeout
        self._task: asyncio.Task[None] | None = None
        self.listening = asyncio.Event()  # set while LISTEN is in effect (tests wait on it)
        self.server_pid = 0  # the listening connection's backend, while it listens

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _notified(self, connection: Any, pid: int, channel: str, payload: str) -> None:
        callback = self._callbacks.get(channel)
        if callback is not None:
            callback()

    async def _run(self) -> None:
        backoff = 0.1
        warned = False
        while True:
            connection: asyncpg.Connection[Any] | None = None
            try:
                connection = await asyncpg.connect(self._dsn, timeout=self._connect_timeout)
                lost = asyncio.Event()
                connection.add_termination_listener(lambda _connection, lost=lost: lost.set())
                for channel in self._callbacks:
                    await connection.add_listener(channel, self._notified)
                self.server_pid = connection.get_server_pid()
                self.listening.set()
                if warned:
                    logger.info("listening for event notifications again")
                warned = False
                backoff = 0.1
                for callback in self._callbacks.values():
                    callback()  # what was notified while away
                while not lost.is_set():
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(CHECK_SECONDS):
                            await lost.wait()
                    if not lost.is_set():
                        async with asyncio.timeout(self._connect_timeout):
                            await connection.execute("SELECT 1")
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as error:
                if not warned:
                    logger.warning(
                        "cannot listen for event notifications (%r); polling until it works",
                        error,
                    )
                    warned = True
            finally:
                self.listening.clear()
                if connection is not None:
                    connection.terminate()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
