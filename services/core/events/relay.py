"""The relay: places committed events in the feed and publishes them to JetStream.

One process relays at a time: whoever holds the lease in the `event_relay` row.
Every transaction of the holder first renews the lease, on the condition that it
still holds it (`holder = me AND lease_expires_at > now`); when that matches no row
another process took over, and this one rolls back and stands by. So a holder that
stalled past its lease (a long GC pause, a lost database) can no longer write what
the new holder writes, and the unique index on feed_position stops even a holder
whose clock is wrong from placing an event twice. Standbys try to take the lease
every third of its length; the holder renews it at least that often.

A round: place the committed events the relay has not placed yet (services.core
.events.feed), then publish the placed ones after `delivered_position`, in feed
order, and move `delivered_position` past those JetStream acknowledged. The relay is
not on the write path: with the broker or the database away, writes go on (or fail)
as they would without it, and it catches up once they are back.

It wakes when this process's units of work commit events (`events_committed`) and,
on PostgreSQL, when any process does (LISTEN commerce_outbox: a trigger on the
outbox notifies at commit); it polls every `event_poll_seconds` otherwise (SQLite
across processes)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, delete, or_, select, update
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from services.core.db.engine import UtcDateTime, behind_pooler, create_engine, utc_now
from services.core.db.outbox import EventRelayState, OutboxEvent
from services.core.db.statements import (
    Row,
    Statement,
    Transaction,
)
from services.core.db.unit_of_work import TenantDatabase
from services.core.events.feed import (
    PLACE_BATCH,
    RELAY_NAME,
    ensure_relay_row,
    place_events,
    record_placed,
)
from services.core.events.notifications import (
    FEED_CHANNEL,
    OUTBOX_CHANNEL,
    DatabaseNotifications,
)
from services.core.events.publisher import ACK_TIMEOUT, EventPublisher
from services.core.events.signals import Signal
from services.core.rpc.statuses import is_unavailable
from services.core.settings import Settings

logger = logging.getLogger(__name__)

# Events published per batch (acks awaited together).
PUBLISH_BATCH = 1000
# Events pruned per transaction: short transactions, short locks.
PRUNE_BATCH = 1000
# The holder prunes when it takes the lease, then this often. Pruning is the
# holder's (not the purge loop every worker runs): pruned_position must only grow,
# and only the holder knows delivered_position is not about to move under it.
PRUNE_INTERVAL = 300.0
MAX_BACKOFF_SECONDS = 5.0
# Woken by a commit, the holder starts its next round no sooner than this after the
# last one began: under load one round takes the events of many commits, instead of
# a round (and its statements) per commit. It bounds what a commit waits to be
# placed by that much more.
ROUND_GAP_SECONDS = 0.02
# How long `stop` lets the round in flight finish.
STOP_SECONDS = 10.0

_STATE = EventRelayState
_POSITIONS = (_STATE.placed_position, _STATE.delivered_position, _STATE.pruned_position)


def _at(name: str) -> Any:
    return bindparam(name, type_=UtcDateTime())


_ACQUIRE = Statement(
    update(EventRelayState)
    .where(
        _STATE.name == bindparam("relay"),
        or_(_STATE.holder == bindparam("me"), _STATE.lease_expires_at <= _at("now")),
    )
    .values(holder=bindparam("me"), lease_expires_at=_at("until"))
    .returning(*_POSITIONS)
)
# The fence: first statement of every transaction the holder runs.
_RENEW = Statement(
    update(EventRelayState)
    .where(
        _STATE.name == bindparam("relay"),
        _STATE.holder == bindparam("me"),
        _STATE.lease_expires_at > _at("now"),
    )
    .values(lease_expires_at=_at("until"))
    .returning(*_POSITIONS)
)
_RELEASE = Statement(
    update(EventRelayState)
    .where(_STATE.name == bindparam("relay"), _STATE.holder == bindparam("me"))
    .values(holder="", lease_expires_at=_at("now"))
)
_SET_DELIVERED = Statement(
    update(EventRelayState)
    .where(_STATE.name == bindparam("relay"))
    .values(delivered_position=bindparam("delivered"))
)
_SET_PRUNED = Statement(
    update(EventRelayState)
    .where(_STATE.name == bindparam("relay"))
    .values(pruned_position=bindparam("pruned"))
)

_EVENT = OutboxEvent
_PLACED_AFTER = Statement(
    select(
        _EVENT.feed_position,
        _EVENT.event_id,
        _EVENT.store_id,
        _EVENT.module,
        _EVENT.event_type,
        _EVENT.subject,
        _EVENT.sequence,
        _EVENT.occurred_at,
        _EVENT.payload,
    )
    .where(_EVENT.feed_position > bindparam("after"), _EVENT.feed_position <= bindparam("upto"))
    .order_by(_EVENT.feed_position)
    .limit(bindparam("batch"))
)
# The oldest delivered events not yet pruned, in feed order (the feed_position index).
_PRUNABLE = Statement(
    select(_EVENT.feed_position, _EVENT.occurred_at)
    .where(_EVENT.feed_position > bindparam("after"), _EVENT.feed_position <= bindparam("upto"))
    .order_by(_EVENT.feed_position)
    .limit(bindparam("batch"))
)
_PRUNE = Statement(
    delete(OutboxEvent).where(
        _EVENT.feed_position > bindparam("after"), _EVENT.feed_position <= bindparam("last")
    )
)


class LeaseLost(Exception):
    """Another process relays now."""


class EventRelay:
    """Relays in a task of its own from `start` until `stop`, which hands the lease back.
    (`round` is one round of it, for whoever drives it by hand.)"""

    def __init__(
        self,
        database: TenantDatabase,
        settings: Settings,
        *,
        events_committed: Signal,
        events_placed: Signal,
        name: str = RELAY_NAME,
        report_database: bool = True,
    ) -> None:
        """`report_database`: warn when the database is out of reach (False where
        something else says so already, as a server's health watch does)."""
        self.database = database
        self.settings = settings
        self.name = name
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.events_committed = events_committed
        self.events_placed = events_placed
        self.lease = timedelta(seconds=settings.event_relay_lease_seconds)
        self.holding = False
        self._publisher: EventPublisher | None = None
        if settings.nats_url:
            self._publisher = EventPublisher(
                settings.nats_url,
                settings.nats_stream,
                settings.nats_subject_prefix,
                on_ready=events_committed.notify,
                # Acks are awaited within the lease, which the holder renews after them.
                ack_timeout=min(ACK_TIMEOUT, settings.event_relay_lease_seconds / 3),
            )
        self.notifications: DatabaseNotifications | None = None
        if (listen_url := _listen_url(database.engine, settings)) is not None:
            self.notifications = DatabaseNotifications(
                listen_url,
                {OUTBOX_CHANNEL: events_committed.notify, FEED_CHANNEL: events_placed.notify},
                connect_timeout=settings.db_connect_timeout,
            )
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._next_prune = 0.0
        self._db_trouble = False
        self._last_failure = ""
        self.tries = 0  # rounds begun, failed or not
        self._report_database = report_database

    def start(self) -> None:
        if self._task is None:
            self._stopping.clear()
            self._task = asyncio.create_task(self.run())

    async def stop(self) -> None:
        """Stops relaying and releases the lease, so that a standby takes over at once."""
        if self._task is not None:
            # The round in flight ends first (a transaction cut short by cancellation
            # may strand SQLite's only connection); one that hangs is cancelled.
            self._stopping.set()
            try:
                async with asyncio.timeout(STOP_SECONDS):
                    await asyncio.shield(self._task)
            except TimeoutError:
                self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.holding:
            self.holding = False
            with contextlib.suppress(Exception):  # unreachable: the lease just runs out
                async with asyncio.timeout(self.settings.db_connect_timeout):
                    async with self.database.maintenance() as statements:
                        await statements.execute(
                            _RELEASE, {"relay": self.name, "me": self.holder, "now": utc_now()}
                        )
                        await statements.commit()

    async def run(self) -> None:
        if self.notifications is not None:
            self.notifications.start()
        if self._publisher is not None:
            self._publisher.start()
        backoff = 0.1
        loop = asyncio.get_running_loop()
        try:
            while not self._stopping.is_set():
                woken = self.events_committed.mark()
                began = loop.time()
                self.tries += 1
                try:
                    busy = await self.round()
                except asyncio.CancelledError:
                    raise
                except Exception as error:  # the database is away: wait, try again
                    self._trouble(error)
                    await self._pause(None, backoff)
                    backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
                    continue
                backoff = 0.1
                if self._db_trouble:
                    logger.info("event relay: database reachable again")
                    self._db_trouble = False
                if not busy and self.holding:
                    await self._pause(woken, self._idle_seconds())
                    if (gap := began + ROUND_GAP_SECONDS - loop.time()) > 0:
                        await self._pause(None, gap)
                elif not busy:
                    # A standby ignores commits (the holder sees to them) and tries
                    # the lease at the pace of the holder's renewals, or of polling.
                    await self._pause(None, self._standby_seconds())
        finally:
            if self.notifications is not None:
                await self.notifications.stop()
            if self._publisher is not None:
                await self._publisher.close()

    async def _pause(self, mark: asyncio.Event | None, seconds: float) -> None:
        """Waits `seconds`, or less when `mark` is notified or the relay stops."""
        waits = [asyncio.ensure_future(self._stopping.wait())]
        if mark is not None:
            waits.append(asyncio.ensure_future(mark.wait()))
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()

    def _standby_seconds(self) -> float:
        return min(self.settings.event_relay_lease_seconds / 3, self.settings.event_poll_seconds)

    def _idle_seconds(self) -> float:
        # The holder renews, and a standby tries to take over, every third of a lease.
        third = self.settings.event_relay_lease_seconds / 3
        if self.notifications is not None and self.notifications.listening.is_set():
            return third  # woken by NOTIFY, not by polling
        return min(third, self.settings.event_poll_seconds)

    def _trouble(self, error: BaseException) -> None:
        if not is_unavailable(error):  # not an outage: say what it was, once a kind
            if repr(error) != self._last_failure:
                logger.warning("event relay: a round failed (%r); trying again", error)
            self._last_failure = repr(error)
            return
        if not self._db_trouble and self._report_database:
            logger.warning("event relay: database unreachable (%r); retrying", error)
            self._db_trouble = True
        else:
            logger.debug("event relay: still failing: %r", error)

    async def round(self) -> bool:
        """One round of the relay; whether there is more to do at once."""
        if not self.holding and not await self._acquire():
            return False
        try:
            placed, delivered, upto = await self._place()
            published = await self._publish(delivered, upto)
            if time.monotonic() >= self._next_prune:
                await self.prune()
                self._next_prune = time.monotonic() + PRUNE_INTERVAL
        except LeaseLost:
            logger.info("event relay: another process took over; standing by")
            self.holding = False
            return False
        return placed >= PLACE_BATCH or published >= PUBLISH_BATCH

    def _lease_params(self) -> dict[str, Any]:
        now = utc_now()
        return {"relay": self.name, "me": self.holder, "now": now, "until": now + self.lease}

    async def _acquire(self) -> bool:
        async with self.database.maintenance() as statements:
            await ensure_relay_row(statements, self.name)
            row = await statements.fetch_one(_ACQUIRE, self._lease_params())
            await statements.commit()
        if row is None:
            return False
        logger.info("event relay: relaying (lease holder %s)", self.holder)
        self.holding = True
        self._next_prune = 0.0  # prune once at the start of every tenure
        return True

    async def _fence(self, statements: Transaction) -> Row:
        """Renews the lease in `statements`' transaction; LeaseLost when another holds it."""
        row = await statements.fetch_one(_RENEW, self._lease_params())
        if row is None:
            raise LeaseLost
        return row

    async def _place(self) -> tuple[int, int, int]:
        """Places a batch of committed events; how many, and the delivered and placed
        positions its transaction left."""
        try:
            async with self.database.maintenance() as statements:
                state = await self._fence(statements)
                last = int(state["placed_position"])
                delivered = int(state["delivered_position"])
                placed = await place_events(statements, last, PLACE_BATCH)
                if placed:
                    await record_placed(statements, self.name, last + placed)
                if self._publisher is None:
                    # Nothing to publish to: delivered follows placed. Turning NATS on
                    # later publishes from then on, not the history.
                    delivered = last + placed
                    await statements.execute(
                        _SET_DELIVERED, {"relay": self.name, "delivered": delivered}
                    )
                await statements.commit()
        except IntegrityError:
            # A position taken already: another relay placed it, so this one is not
            # the holder any more, whatever its lease said.
            raise LeaseLost from None
        if placed:
            self.events_placed.notify()
        return placed, delivered, last + placed

    async def _publish(self, delivered: int, placed: int) -> int:
        """Publishes a batch of the events placed after `delivered` (up to `placed`),
        the positions the placing transaction just left; how many."""
        if self._publisher is None or not self._publisher.ready:
            return 0
        async with self.database.maintenance(transaction=False) as statements:
            events = await statements.fetch(
                _PLACED_AFTER, {"after": delivered, "upto": placed, "batch": PUBLISH_BATCH}
            )
        if not events:
            return 0
        stored = await self._publisher.publish(events)
        if stored:
            upto = int(events[stored - 1]["feed_position"])
            async with self.database.maintenance() as statements:
                now = await self._fence(statements)
                if int(now["delivered_position"]) != delivered:
                    raise LeaseLost  # someone else moved it meanwhile
                await statements.execute(_SET_DELIVERED, {"relay": self.name, "delivered": upto})
                await statements.commit()
        return stored

    async def prune(self) -> int:
        """Deletes delivered events older than the retention, oldest feed positions
        first, a batch per transaction, stopping at the first one still kept; how many."""
        before = utc_now() - timedelta(hours=self.settings.event_retention_hours)
        pruned = 0
        while True:
            async with self.database.maintenance() as statements:
                state = await self._fence(statements)
                after = int(state["pruned_position"])
                rows = await statements.fetch(
                    _PRUNABLE,
                    {"after": after, "upto": state["delivered_position"], "batch": PRUNE_BATCH},
                )
                old = _old_prefix(rows, before)
                if old:
                    last = int(rows[old - 1]["feed_position"])
                    await statements.execute(_PRUNE, {"after": after, "last": last})
                    await statements.execute(_SET_PRUNED, {"relay": self.name, "pruned": last})
                await statements.commit()
            pruned += old
            if old < PRUNE_BATCH:
                if pruned:
                    logger.info("event relay: pruned %d events past the retention", pruned)
                return pruned


def _old_prefix(rows: Sequence[Row], before: datetime) -> int:
    """How many of `rows`, from the first, occurred before `before`."""
    count = 0
    for row in rows:
        if row["occurred_at"] >= before:
            break
        count += 1
    return count


def _listen_url(engine: AsyncEngine, settings: Settings) -> URL | None:
    """Where to LISTEN for notifications; None: nowhere, poll. A transaction pooler
    lends a connection for one transaction, so a LISTEN through it would not last
    (and notifications would reach whichever client holds that connection next)."""
    if engine.dialect.name != "postgresql":
        return None
    if settings.database_listen_url:
        return make_url(settings.database_listen_url)
    return None if behind_pooler(engine) else engine.url


async def relay_only(settings: Settings) -> None:
    """`commerce relay`: the relay alone, until SIGTERM or SIGINT."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    engine = create_engine(
        settings.database_url,
        pool_size=min(settings.db_pool_size, 2),
        connect_timeout=settings.db_connect_timeout,
        pooler=settings.database_pooler,
    )
    database = TenantDatabase(engine)
    relay = EventRelay(
        database,
        settings,
        events_committed=Signal(),
        events_placed=Signal(),
    )
    relay.start()
    logger.info("event relay started (holder %s)", relay.holder)
    try:
        await stopping.wait()
    finally:
        await relay.stop()
        database.close()
        await engine.dispose()
    logger.info("event relay stopped")
