"""A PostgreSQL streaming replica that serves the reads that may lag a little.

Only reads their caller opted into (`TenantDatabase.reading_stale_ok`) come here, and
only while the replica is `usable`: reachable, a standby, and at most
`max_lag_seconds` behind the primary. A background probe (`probe`, every
health_check_interval) decides that; a read that fails on the replica is asked again
of the primary in the same call, and a connection failure bypasses the replica at
once, without waiting for the next probe.

Lag is measured against the primary's own WAL position, not against the time of the
last replayed commit: `now() - pg_last_xact_replay_timestamp()` grows without bound
while the primary is idle, although the replica then misses nothing. Each probe reads
the primary's current WAL position first, then the replica's replayed one. A replica
that replayed up to the position the primary had just before is current (lag 0);
otherwise it lags at least since the first probe that saw the primary beyond what the
replica has replayed. So lag is known to within one probe interval."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg
from prometheus_client import Counter, Gauge
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from services.core.db.engine import create_engine
from services.core.domain.admission import WorkQueue

logger = logging.getLogger(__name__)

# A dead replica must not stall the calls that try it before the probe notices: its
# connections (new or from its pool) are given up on after this long at most.
REPLICA_CONNECT_TIMEOUT = 1.0
# Primary positions remembered while the replica is behind them (one per probe).
MAX_SAMPLES = 10_000

REPLICA_READS = Counter(
    "commerce_replica_tolerant_reads_total",
    "Reads that may be served by the read replica, by where they were served.",
    ["served_by"],
)
REPLICA_SERVING = Gauge(
    "commerce_read_replica_serving",
    "1 while the read replica serves reads, 0 while they go to the primary.",
    multiprocess_mode="livemin",
)
REPLICA_LAG_SECONDS = Gauge(
    "commerce_read_replica_lag_seconds",
    "How far the read replica was behind the primary at the last probe (-1: unknown).",
    multiprocess_mode="livemax",
)
SERVED_BY_REPLICA = REPLICA_READS.labels("replica")
SERVED_BY_PRIMARY = REPLICA_READS.labels("primary")

_PRIMARY_POSITION = text("SELECT pg_current_wal_lsn()::text")
_REPLICA_POSITION = text("SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text")


@dataclass(frozen=True)
class ReplicaState:
    """What the last probe (or failed read) found."""

    usable: bool
    reason: str  # why not usable; "" when usable
    lag_seconds: float | None  # None: not measured


def lsn_value(lsn: str) -> int:
    """A pg_lsn's text form (16/B374D848) as a number that orders like it."""
    high, _, low = lsn.partition("/")
    return (int(high, 16) << 32) | int(low, 16)


def is_connection_error(error: BaseException) -> bool:
    """Whether `error` (or what it wraps) says the connection or the server is gone,
    as opposed to a failure of the statement itself."""
    seen: BaseException | None = error
    for _ in range(5):  # the wrapping chain is short; never loop on a cycle
        if seen is None:
            return False
        if isinstance(seen, sa_exc.DBAPIError) and seen.connection_invalidated:
            return True
        if isinstance(
            seen,
            OSError
            | TimeoutError
            | asyncpg.PostgresConnectionError
            | asyncpg.InterfaceError
            | asyncpg.exceptions.OperatorInterventionError,
        ):
            return True
        seen = getattr(seen, "orig", None) or seen.__cause__
    return False


class ReadReplica:
    """The replica's engine and whether reads may go to it now."""

    def __init__(
        self,
        url: str,
        *,
        primary_url: str,
        max_lag_seconds: float,
        pool_size: int,
        connect_timeout: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.connect_timeout = min(connect_timeout, REPLICA_CONNECT_TIMEOUT)
        self.engine = create_engine(url, pool_size=pool_size, connect_timeout=self.connect_timeout)
        # The probe's own connections, outside the pools: calls that hold every pooled
        # connection must not make it wait (and take a busy replica for a dead one),
        # nor keep it from measuring the lag when it matters most.
        self._probes = (_probe_engine(primary_url), _probe_engine(url))
        self.max_lag_seconds = max_lag_seconds
        self.queue = WorkQueue("replica reads", pool_size, seconds_each=0.005)
        self._clock = clock
        # Until the first probe, reads go to the primary.
        self.state = ReplicaState(False, "not probed yet", None)
        # (time, primary WAL position) of the probes that saw the primary beyond the
        # replica's replayed position, oldest first.
        self._ahead: deque[tuple[float, int]] = deque(maxlen=MAX_SAMPLES)
        REPLICA_SERVING.set(0)
        REPLICA_LAG_SECONDS.set(-1)

    @property
    def usable(self) -> bool:
        return self.state.usable

    @property
    def label(self) -> str:
        """The replica's URL without its password, fit for a log line."""
        return self.engine.url.render_as_string(hide_password=True)

    async def probe(self) -> ReplicaState:
        """Measures the replica against the primary and settles whether it serves
        reads. The primary out of reach leaves the state as it was: nothing to
        measure against (and health already says the database is down)."""
        try:
            async with asyncio.timeout(self.connect_timeout * 5):
                async with self._probes[0].connect() as connection:
                    primary_lsn = lsn_value(await connection.scalar(_PRIMARY_POSITION))
        except Exception as error:  # the primary's probe reports it
            logger.debug("read replica probe: primary unreachable: %r", error)
            return self.state
        now = self._clock()
        try:
            async with asyncio.timeout(self.connect_timeout * 5):
                async with self._probes[1].connect() as connection:
                    row = (await connection.execute(_REPLICA_POSITION)).one()
        except Exception as error:  # unreachable or failing: bypassed
            await self._settle(ReplicaState(False, f"unreachable: {error!r}"[:200], None))
            return self.state
        in_recovery, replayed = bool(row[0]), row[1]
        if not in_recovery or replayed is None:
            reason = "is not a standby (promoted, or not a replica of the primary)"
            await self._settle(ReplicaState(False, reason, None))
            return self.state
        lag = self._lag(now, primary_lsn, lsn_value(replayed))
        if lag > self.max_lag_seconds:
            reason = f"{lag:.1f} s behind the primary (bound {self.max_lag_seconds:g} s)"
            await self._settle(ReplicaState(False, reason, lag))
        else:
            await self._settle(ReplicaState(True, "", lag))
        return self.state

    def _lag(self, now: float, primary_lsn: int, replayed: int) -> float:
        """Seconds since the first probe that saw the primary beyond `replayed`
        (0 when the replica has replayed what the primary had at this probe)."""
        while self._ahead and self._ahead[0][1] <= replayed:
            self._ahead.popleft()  # the replica has those now
        if primary_lsn > replayed and (not self._ahead or self._ahead[-1][1] < primary_lsn):
            self._ahead.append((now, primary_lsn))
        return now - self._ahead[0][0] if self._ahead else 0.0

    async def bypass(self, error: BaseException) -> None:
        """A read on the replica failed: a connection failure takes it out of use at
        once (the next probe brings it back); any other is the read's own."""
        if self.state.usable and is_connection_error(error):
            await self._settle(ReplicaState(False, f"unreachable: {error!r}"[:200], None))

    async def _settle(self, state: ReplicaState) -> None:
        was = self.state
        self.state = state
        REPLICA_SERVING.set(int(state.usable))
        REPLICA_LAG_SECONDS.set(-1 if state.lag_seconds is None else state.lag_seconds)
        if was.usable == state.usable:
            return
        if state.usable:
            logger.warning("read replica %s serves reads", self.label)
        else:
            logger.warning(
                "read replica %s bypassed, reads go to the primary: %s", self.label, state.reason
            )
        if not state.usable and state.lag_seconds is None:
            # Its pooled connections are likely dead: each would fail one read (and
            # bypass the replica again) once it is back.
            await self.engine.dispose()

    async def close(self) -> None:
        await self.engine.dispose()
        for engine in self._probes:
            await engine.dispose()


def _probe_engine(url: str) -> AsyncEngine:
    """A connection per use, given up on after REPLICA_CONNECT_TIMEOUT."""
    return create_async_engine(
        url,
        poolclass=NullPool,
        connect_args={"timeout": REPLICA_CONNECT_TIMEOUT},
        hide_parameters=True,
    )
