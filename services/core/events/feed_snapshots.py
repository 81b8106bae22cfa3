"""A store's data as of one moment, read-only, with the feed cursor that moment is
consistent at: every event of a change the snapshot shows is at or before the
cursor, every later change's event after it. A system that loads the snapshot
(CustomerService.ExportCustomers) and then follows EventService from the cursor
misses no change and sees none twice.

The newest feed position visible in a snapshot is not that cursor. Events committed
before the snapshot but not placed yet get their positions later, among those of
changes committed after it: a consumer following the feed from the newest visible
position would apply them a second time. So opening a snapshot places them itself,
serialised with the relay (services.core.events.relay) by the relay's own row, and
takes the snapshot exactly there:

- PostgreSQL: connection A, in REPEATABLE READ, first locks the relay's row (a
  relay that committed meanwhile makes that a serialization failure: A starts
  again), places every unplaced event its snapshot sees with the relay's placing
  statement, records the last position in the relay's row and exports its snapshot
  (pg_export_snapshot). Connection B imports it (SET TRANSACTION SNAPSHOT) in a READ
  ONLY transaction; then A commits. B sees exactly what A saw: every event of it is
  placed at or before A's last position, and every event B does not see was
  unplaced for A, so it is placed after that position, by the relay, once A commits.
- SQLite (one writer connection, services.core.db.sqlite): A is the writer, whose
  transaction takes SQLite's write lock as it begins: no other commit can come
  until A ends. A places and records as above; B, a connection
  of its own beside the pool, begins and reads once, which fixes its WAL snapshot at
  the last commit (without A's uncommitted writes, which a snapshot of the data
  does not need); then A commits.

The relay reads its positions from its row at the start of every round, so it goes
on after the positions placed here and publishes them like its own.

B stays open (and holds a pooled connection on PostgreSQL, an extra one on SQLite)
until the snapshot is closed; a long one keeps PostgreSQL's vacuum from removing
the row versions it may still read, and SQLite's WAL from being reset."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any, Protocol

import asyncpg
from sqlalchemy import bindparam, select, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.core.db.engine import create_sqlite_side_engine
from services.core.db.outbox import DomainEvent, EventRelayState, OutboxEvent
from services.core.db.statements import (
    CoreTransaction,
    DriverTransaction,
    Row,
    Statement,
    Transaction,
)
from services.core.db.stores import check_store_id
from services.core.db.unit_of_work import NO_PARAMS, TenantDatabase, UnitOfWork
from services.core.domain.errors import Aborted, Overloaded
from services.core.domain.resource_names import store_scope
from services.core.events.feed import (
    PLACE_BATCH,
    RELAY_NAME,
    ensure_relay_row,
    place_events,
    record_placed,
)
from services.core.events.reader import cursor_of

# Times A starts again after a serialization failure (the relay placed or renewed
# its lease meanwhile): each of its transactions is short, so a few suffice.
OPEN_ATTEMPTS = 20
# Snapshots open at once per process on SQLite (each holds a connection of its own);
# on PostgreSQL, half the pool, each holding a pooled connection.
SQLITE_OPEN_SNAPSHOTS = 4
BUSY_RETRY_AFTER = timedelta(seconds=1)
# PostgreSQL's application_name of a connection while it holds a snapshot.
APPLICATION_NAME = "commerce feed snapshot"

_RELAY = EventRelayState
_PLACED = select(_RELAY.placed_position).where(_RELAY.name == bindparam("relay"))
_READ_PLACED = Statement(_PLACED)
# SQLite has no FOR UPDATE (SQLAlchemy leaves it out): its write lock serialises.
_LOCK_PLACED = Statement(_PLACED.with_for_update())
# The highest position placed: the relay's row says it, unless a placer that keeps
# no row placed further (the feed's tests do). Never less: pruning deletes events,
# never positions of the row. Through the unique index on feed_position.
_HIGHEST_PLACED = Statement(
    select(OutboxEvent.feed_position)
    .where(OutboxEvent.feed_position.is_not(None))
    .order_by(OutboxEvent.feed_position.desc())
    .limit(1)
)
_EXPORT_SNAPSHOT = Statement(text("SELECT pg_export_snapshot()"))
# What pg_export_snapshot returns ("00000003-0000001B-1"): checked before it goes
# into SET TRANSACTION SNAPSHOT, which takes no parameter.
_SNAPSHOT_ID = re.compile(r"^[0-9A-Fa-f]+(?:-[0-9A-Fa-f]+)+$")

# Tasks left running by a cancelled open or close, kept alive until they end.
_unfinished: set[asyncio.Task[Any]] = set()


class FeedSnapshot(UnitOfWork):
    """A store's data as of one moment, read-only (the queries of the modules take it
    as they take any unit of work), and `cursor`, the feed cursor it is consistent at
    ("" when nothing was ever placed: the feed's start).

    Each read runs to its end even when its caller is cancelled (a statement cut
    short can strand an aiosqlite connection); closing the snapshot waits for it."""

    def __init__(self, store_id: int, transaction: Transaction, position: int) -> None:
        super().__init__(store_id, transaction)
        self.position = position
        self.cursor = cursor_of(position) if position else ""
        self._reading: asyncio.Future[Sequence[Row]] | None = None

    async def fetch(
        self, statement: Statement, params: Mapping[str, Any] = NO_PARAMS
    ) -> Sequence[Row]:
        self._reading = asyncio.ensure_future(super().fetch(statement, params))
        return await asyncio.shield(self._reading)

    async def fetch_one(
        self, statement: Statement, params: Mapping[str, Any] = NO_PARAMS
    ) -> Row | None:
        rows = await self.fetch(statement, params)
        return rows[0] if rows else None

    async def scalar(self, statement: Statement, params: Mapping[str, Any] = NO_PARAMS) -> Any:
        row = await self.fetch_one(statement, params)
        return None if row is None else next(iter(row.values()))

    async def execute(self, statement: Statement, params: Mapping[str, Any] = NO_PARAMS) -> None:
        raise TypeError("a feed snapshot is read-only")

    async def execute_many(self, statement: Statement, rows: Sequence[Mapping[str, Any]]) -> None:
        raise TypeError("a feed snapshot is read-only")

    def record(self, event: DomainEvent) -> None:
        raise TypeError("a feed snapshot is read-only")

    async def commit(self) -> None:
        raise TypeError("a feed snapshot is read-only")

    async def settled(self) -> None:
        """Waits for the read in flight, if any, to end."""
        if self._reading is not None and not self._reading.done():
            await asyncio.wait([self._reading])


class _Reader(Protocol):
    """Connection B, which holds the snapshot."""

    transaction: Transaction

    async def close(self) -> None: ...


class FeedSnapshots:
    """Opens feed snapshots on one database. `on_placed` is called when opening one
    placed events (the relay's `events_placed`: this process's streams wake)."""

    def __init__(
        self, database: TenantDatabase, on_placed: Callable[[], None] | None = None
    ) -> None:
        self._db = database
        self._engine = database.engine
        self._on_placed = on_placed
        self._sqlite = self._engine.dialect.name == "sqlite"
        self._side: AsyncEngine | None = None
        pool_size = getattr(self._engine.pool, "size", lambda: 2)()
        self._limit = SQLITE_OPEN_SNAPSHOTS if self._sqlite else max(1, pool_size // 2)
        self._open = 0

    @property
    def open_snapshots(self) -> int:
        return self._open

    @asynccontextmanager
    async def snapshot(self, store_id: int) -> AsyncIterator[FeedSnapshot]:
        """The store's snapshot, checked like any unit of work of the store (NOT_FOUND
        without it, FAILED_PRECONDITION when inactive); closed (its connections
        released) when the block ends, however it ends."""
        check_store_id(store_id)
        with store_scope(store_id):
            if self._open >= self._limit:
                raise Overloaded(
                    "server busy: too many snapshots (exports) open; try again later",
                    retry_after=BUSY_RETRY_AFTER,
                )
            self._open += 1
            try:
                with self._db.queue.entered():
                    reader, position = await _uncancelled_open(self._open_reader())
                snapshot = FeedSnapshot(store_id, self._db.traced(reader.transaction), position)
                try:
                    await self._db.stores.require_active(snapshot)
                    yield snapshot
                finally:
                    await _uncancelled(_close(snapshot, reader))
            finally:
                self._open -= 1

    async def _open_reader(self) -> tuple[_Reader, int]:
        if self._sqlite:
            opened = await self._open_sqlite()
        else:
            opened = await self._open_postgresql()
        if opened[1] and self._on_placed is not None:
            self._on_placed()
        return opened

    # -- SQLite ------------------------------------------------------------------------

    def _side_engine(self) -> AsyncEngine:
        if self._side is None:
            # Its own BEGIN: the driver would not begin a transaction for a SELECT.
            self._side = create_sqlite_side_engine(self._engine.url).execution_options(
                isolation_level="AUTOCOMMIT"
            )
        return self._side

    async def _open_sqlite(self) -> tuple[_Reader, int]:
        reader = _SqliteReader(await self._side_engine().connect())
        try:
            async with self._db.maintenance() as statements:
                # A write first: it takes the write lock, so that no commit comes
                # between what A places and what B sees.
                await ensure_relay_row(statements, RELAY_NAME)
                position = await _place_unplaced(statements)
                await reader.begin()
                await statements.commit()
        except BaseException:
            await reader.close()
            raise
        return reader, position

    # -- PostgreSQL --------------------------------------------------------------------

    async def _open_postgresql(self) -> tuple[_Reader, int]:
        reader = _PostgresReader(await self._engine.raw_connection(), self._engine)
        try:
            placer = await self._engine.raw_connection()
            driver = placer.driver_connection
            assert driver is not None  # a checked-out connection always has one
            clean = False
            try:
                position = await self._place_postgresql(driver, reader)
                clean = True
            finally:
                if not clean or driver.is_closed() or driver.is_in_transaction():
                    placer.invalidate()
                placer.close()
        except BaseException:
            await reader.close()
            raise
        return reader, position

    async def _place_postgresql(self, driver: Any, reader: _PostgresReader) -> int:
        for _ in range(OPEN_ATTEMPTS):
            began = driver.transaction(isolation="repeatable_read")
            statements = DriverTransaction(driver, self._engine.dialect, began)
            await began.start()
            try:
                # First: the snapshot is taken at the lock, and a relay that commits
                # after it (placing, or renewing its lease) fails this statement.
                if await statements.fetch_one(_LOCK_PLACED, {"relay": RELAY_NAME}) is None:
                    await began.rollback()
                    async with driver.transaction():
                        await ensure_relay_row(
                            DriverTransaction(driver, self._engine.dialect), RELAY_NAME
                        )
                    continue
                position = await _place_unplaced(statements)
                snapshot_id = str(await statements.scalar(_EXPORT_SNAPSHOT, {}))
                await reader.begin(snapshot_id)
                await statements.commit()
                return position
            except (asyncpg.TransactionRollbackError, sa_exc.IntegrityError):
                # A serialization failure or deadlock (40001, 40P01), or a position
                # another placer took: a fresh snapshot sees what it did.
                await began.rollback()
                await reader.reset()
        raise Aborted(
            "the event feed was too busy to take a consistent snapshot; try again",
            reason="SNAPSHOT_CONTENDED",
        )


async def _place_unplaced(statements: Transaction) -> int:
    """Places every committed event the transaction sees unplaced, after the highest
    position placed, and records the last; returns it. The caller holds the relay's
    row (or SQLite's write lock)."""
    recorded = int(await statements.scalar(_READ_PLACED, {"relay": RELAY_NAME}) or 0)
    highest = int(await statements.scalar(_HIGHEST_PLACED, {}) or 0)
    last = max(recorded, highest)
    while True:
        placed = await place_events(statements, last, PLACE_BATCH)
        last += placed
        if placed < PLACE_BATCH:
            break
    if last != recorded:
        await record_placed(statements, RELAY_NAME, last)
    return last


class _SqliteReader:
    """B on SQLite: a connection of its own, in a transaction it begins itself."""

    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection
        self._began = False
        self.transaction: Transaction = CoreTransaction(connection)

    async def begin(self) -> None:
        await self._connection.exec_driver_sql("BEGIN")
        self._began = True
        # A read of the database fixes the transaction's WAL snapshot: the last commit.
        await self.transaction.fetch(_READ_PLACED, {"relay": RELAY_NAME})

    async def close(self) -> None:
        try:
            if self._began:
                await self._connection.exec_driver_sql("ROLLBACK")
        finally:
            await self._connection.close()


class _PostgresReader:
    """B on PostgreSQL: a pooled connection, in a read-only transaction that imports
    A's snapshot."""

    def __init__(self, pooled: Any, engine: AsyncEngine) -> None:
        self._pooled = pooled
        self._driver = pooled.driver_connection
        self._dialect = engine.dialect
        self._began: Any = None
        self.transaction: Transaction = DriverTransaction(self._driver, self._dialect)

    async def begin(self, snapshot_id: str) -> None:
        if not _SNAPSHOT_ID.match(snapshot_id):
            raise ValueError(f"unexpected snapshot id {snapshot_id!r}")
        self._began = self._driver.transaction(isolation="repeatable_read", readonly=True)
        await self._began.start()
        # First statement of the transaction, as PostgreSQL requires.
        await self._driver.execute(f"SET TRANSACTION SNAPSHOT '{snapshot_id}'")
        # Named in pg_stat_activity while it lasts (an operator sees what holds it).
        await self._driver.execute(f"SET LOCAL application_name = '{APPLICATION_NAME}'")
        self.transaction = DriverTransaction(self._driver, self._dialect, self._began)

    async def reset(self) -> None:
        """Ends the transaction begun, if any, so that `begin` may run again."""
        if self._began is not None:
            began, self._began = self._began, None
            await began.rollback()

    async def close(self) -> None:
        reusable = False
        try:
            await self.reset()
            reusable = True
        finally:
            # A connection whose transaction did not end cleanly serves no one else.
            if not reusable or self._driver.is_closed() or self._driver.is_in_transaction():
                self._pooled.invalidate()
            self._pooled.close()


async def _close(snapshot: FeedSnapshot, reader: _Reader) -> None:
    await snapshot.settled()
    await reader.close()


def _keep(task: asyncio.Task[Any]) -> None:
    _unfinished.add(task)
    task.add_done_callback(_unfinished.discard)


async def _uncancelled(work: Any) -> None:
    """Runs `work` to its end even if the caller is cancelled meanwhile (closing a
    snapshot: its connections must not be stranded half released)."""
    task = asyncio.ensure_future(work)
    try:
        await asyncio.shield(task)
    except BaseException:
        if not task.done():
            _keep(task)
        raise


async def _uncancelled_open(work: Any) -> tuple[_Reader, int]:
    """Opens a snapshot to its end even if the caller is cancelled meanwhile (its
    statements run on the pool's connections); one opened for a caller that is gone
    is closed at once."""
    task: asyncio.Task[tuple[_Reader, int]] = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except BaseException:
        if not task.done():
            _keep(task)
            task.add_done_callback(_close_abandoned)
        raise


def _close_abandoned(task: asyncio.Task[tuple[_Reader, int]]) -> None:
    if not task.cancelled() and task.exception() is None:
        reader, _ = task.result()
        _keep(asyncio.ensure_future(reader.close()))
