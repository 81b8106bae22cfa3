"""Admission control: shed load at the door instead of queueing it past deadlines.

A WorkQueue stands for `capacity` workers (the password threads, the pooled database
connections) and the calls waiting for them. It knows how many calls are in it and a
moving average of how long one holds a worker, so it can tell a newcomer how long it
would take to be served. When every worker is busy and that wait does not fit the
call's deadline (services.core.deadlines), the call is refused at once with
Overloaded (RESOURCE_EXHAUSTED and RetryInfo), before it holds anything: queued, it
would only have run into its deadline, and its work would have delayed the calls that
can still be served. A call that finds a worker free is always admitted, however
short its deadline."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from services.core import deadlines
from services.core.domain.errors import Overloaded

# Weight of the newest measure in the moving average: it follows a machine that
# gets busier within a few dozen calls.
AVERAGE_WEIGHT = 0.1


class WorkQueue:
    def __init__(self, what: str, capacity: int, seconds_each: float) -> None:
        self._what = what
        self._capacity = capacity
        self._lock = threading.Lock()  # thread pools end their work concurrently
        self._inside = 0  # admitted calls not yet done: waiting or holding a worker
        self._seconds = seconds_each

    def expected_wait(self) -> float:
        """Seconds a call admitted now would take to be done: the rounds of work
        ahead of it on the workers, then its own."""
        return (self._inside // self._capacity + 1) * self._seconds

    def admit(self) -> None:
        """Raises Overloaded when every worker is busy and the wait does not fit the
        current call's deadline."""
        if self._inside < self._capacity:
            return
        remaining = deadlines.remaining()
        if remaining is None or self.expected_wait() <= remaining:
            return
        # By then the workers have worked through the queue that is there now.
        drained = math.ceil(self._inside / self._capacity) * self._seconds
        raise Overloaded(
            f"server busy: too much {self._what} queued to finish within the deadline",
            retry_after=timedelta(seconds=drained),
        )

    def enter(self) -> None:
        """Counts an admitted call in, until its `leave`, waiting included."""
        with self._lock:
            self._inside += 1

    def leave(self) -> None:
        with self._lock:
            self._inside -= 1

    @contextmanager
    def entered(self) -> Iterator[None]:
        """Admits the current call (or raises Overloaded) and counts it in the block."""
        self.admit()
        self.enter()
        try:
            yield
        finally:
            self.leave()

    @contextmanager
    def timed(self) -> Iterator[None]:
        """Measures the time a worker is held, into the moving average."""
        began = time.perf_counter()
        try:
            yield
        finally:
            took = time.perf_counter() - began
            with self._lock:
                self._seconds += AVERAGE_WEIGHT * (took - self._seconds)
