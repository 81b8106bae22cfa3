"""In-process wake-ups: something happened (events committed, events placed in the
feed); whoever waits for it looks again, instead of sleeping in a loop."""

from __future__ import annotations

import asyncio
import contextlib


class Signal:
    """Wakes every task waiting when `notify()` is called.

    A waiter takes a `mark()` before it looks for work and waits with it: a
    notification that came between its look and its wait still wakes it."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    def mark(self) -> asyncio.Event:
        return self._event

    @staticmethod
    async def wait(mark: asyncio.Event, seconds: float) -> bool:
        """Waits until a notification after `mark`, at most `seconds`; whether one came."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await mark.wait()
                return True
        return False
