"""One way to a store's data: the unit of work.

Every RPC reaches its store's rows through one `UnitOfWork`, opened by
`TenantDatabase.writing(store_id)` (one transaction, rolled back unless committed) or
`TenantDatabase.reading(store_id)` (each statement on its own: reads skip the
transaction round trips they do not need) or `TenantDatabase.reading_stale_ok` (the
same, on the read replica when there is one: services.core.db.replica);
services.core.events.feed_snapshots opens read-only ones that see one state of the
database however many statements they take. Opening one checks the store first, so
no module can forget to; and every statement it runs gets the store's id bound as
`store_id`, so no query can name another store's rows by mistake. The queries of
each module take the unit of work and nothing else.

A unit of work also carries the events of its changes (`record`): they are written
in its transaction when it commits (services.core.db.outbox)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, TypeVar

from sqlalchemy import text
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import QueuePool

from services.core import consistency, deadlines
from services.core.db.outbox import DomainEvent, EventEncoders, Redaction, append, redact
from services.core.db.replica import SERVED_BY_PRIMARY, SERVED_BY_REPLICA, ReadReplica
from services.core.db.sqlite import SqliteDatabase
from services.core.db.statements import (
    CoreTransaction,
    DriverTransaction,
    Row,
    Statement,
    Transaction,
)
from services.core.db.stores import STORE_IS_ACTIVE, check_store_id, store_inactive
from services.core.domain.admission import WorkQueue
from services.core.domain.errors import NotFound
from services.core.domain.resource_names import store_scope

NO_PARAMS: Mapping[str, Any] = {}

T = TypeVar("T")


class UnitOfWork:
    """One store's statements, in one transaction or (for reads) one connection.

    `store_id` is bound into every statement's parameters: a query says
    `bindparam("store_id")` and never passes it."""

    def __init__(
        self,
        store_id: int,
        transaction: Transaction,
        encoders: EventEncoders | None = None,
        on_events: Callable[[], None] | None = None,
    ) -> None:
        self.store_id = store_id
        self._transaction = transaction
        self.dialect = transaction.dialect
        self._events: list[DomainEvent] = []
        self._redactions: list[Redaction] = []
        self._encoders = encoders or EventEncoders()
        self._on_events = on_events

    def _scoped(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return {**params, "store_id": self.store_id}

    async def fetch(
        self, statement: Statement, params: Mapping[str, Any] = NO_PARAMS
    ) -> Sequence[Row]:
        return await self._transaction.fetch(statement, self._scoped(params))

    async def fetch_one(
        self, statement: Statement, params: Mapping[str, Any] = NO_PARAMS
    ) -> Row | None:
        return await self._transaction.fetch_one(statement, self._scoped(params))

    async def scalar(self, statement: Statement, params: Mapping[str, Any] = NO_PARAMS) -> Any:
        return await self._transaction.scalar(statement, self._scoped(params))

    async def execute(self, statement: Statement, params: Mapping[str, Any] = NO_PARAMS) -> None:
        await self._transaction.execute(statement, self._scoped(params))

    async def execute_many(self, statement: Statement, rows: Sequence[Mapping[str, Any]]) -> None:
        await self._transaction.execute_many(statement, [self._scoped(row) for row in rows])

    def record(self, event: DomainEvent) -> None:
        """Adds the event of a change made in this unit of work: written in its
        transaction at commit, dropped with it otherwise."""
        self._events.append(event)

    def redact_events(self, module: str, subjects: Sequence[str] = (), *, under: str = "") -> None:
        """Empties the personal data of `module`'s past events of `subjects` (and,
        with `under`, of the subjects below it), each payload through the redactor
        its module registered: in this transaction at commit, every module's at once
        (services.core.db.outbox.redact), before the events of this unit of work are
        appended; dropped with it otherwise. A payload that cannot be redacted fails
        the commit."""
        self._redactions.append(Redaction(module, tuple(subjects), under))

    async def commit(self) -> None:
        if self._redactions:
            await redact(self, self._encoders, self._redactions)
            self._redactions.clear()
        if self._events:
            await append(self._transaction, self.store_id, self._events, self._encoders)
        await self._transaction.commit()
        if self._events and self._on_events is not None:
            self._on_events()
        self._events.clear()


class StoreStatusCache:
    """Remembers, for `ttl` seconds, whether a store is active: the check runs on every
    RPC and store status changes rarely. A store that does not exist is never
    remembered, so a new store is usable at once; a deactivation takes effect within
    `ttl` seconds in every process. A ttl of 0 checks the database every time."""

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl
        self._clock = clock
        self._known: dict[int, tuple[bool, float]] = {}

    async def require_active(self, uow: UnitOfWork) -> None:
        """FAILED_PRECONDITION when the unit of work's store is inactive, NOT_FOUND
        when there is no such store."""
        now = self._clock()
        known = self._known.get(uow.store_id)
        if known is not None and known[1] > now:
            active = known[0]
        else:
            is_active = await uow.scalar(STORE_IS_ACTIVE)
            if is_active is None:
                raise NotFound("store", str(uow.store_id))
            active = bool(is_active)
            if self._ttl > 0:
                self._known[uow.store_id] = (active, now + self._ttl)
        if not active:
            raise store_inactive(uow.store_id)


# How long after the caller's deadline PostgreSQL stops a statement of a transaction on
# its own. The client-side cancel normally ends it first, at the deadline; this is the
# backstop for when that cancel request is lost.
DEADLINE_GRACE_MS = 100

_BOUND_TRANSACTION = Statement(
    text("SELECT set_config('statement_timeout', :ms, true), set_config('lock_timeout', :ms, true)")
)


class TenantDatabase:
    """What a module's service layer gets instead of an engine."""

    def __init__(self, engine: AsyncEngine, *, store_cache_seconds: float = 0.0) -> None:
        self.engine = engine
        self.stores = StoreStatusCache(store_cache_seconds)
        # Each statement commits on its own: no BEGIN and ROLLBACK round trips around
        # reads that need no transaction.
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._on_asyncpg = engine.dialect.driver == "asyncpg"
        pool = engine.pool
        # How long a call waits for a free connection before it is refused.
        self._pool_timeout: float = pool.timeout() if isinstance(pool, QueuePool) else 30.0
        # SQLite's units of work do not use the engine's pool: a writer and readers
        # of their own (services.core.db.sqlite).
        self._sqlite: SqliteDatabase | None = None
        if engine.dialect.name == "sqlite":
            self._sqlite = SqliteDatabase(engine.url.database or "", engine.dialect)
        # Calls beyond the pool's connections wait for one; those whose deadline the
        # wait would pass are refused at once (services.core.domain.admission).
        if self._sqlite is not None:
            connections = max(1, self._sqlite.readers)
        else:
            connections = pool.size() if isinstance(pool, QueuePool) else 1
        self.queue = WorkQueue("database work", connections, seconds_each=0.005)
        # How the modules' events become payloads (they register while mounting).
        self.event_encoders = EventEncoders()
        # Called after a unit of work committed events, so a relay in this process
        # wakes at once (others learn it from the database).
        self.events_committed: Callable[[], None] | None = None
        # Where reading_stale_ok reads when it may (None: no replica, the primary).
        self.replica: ReadReplica | None = None
        # With tracing on (services.core.tracing), what wraps each transaction so that
        # its statements get spans; None (off) costs the statements nothing.
        self.trace_statements: Callable[[Transaction, Dialect], Transaction] | None = None

    def close(self) -> None:
        """Closes the connections of its own (SQLite's), after the calls given to
        them; the engine's pool is its owner's to dispose of."""
        if self._sqlite is not None:
            self._sqlite.close()

    def traced(self, statements: Transaction) -> Transaction:
        """`statements`, their spans made when tracing is on."""
        if self.trace_statements is None:
            return statements
        return self.trace_statements(statements, self.engine.dialect)

    def writing(
        self, store_id: int, *, before: Callable[[UnitOfWork], Awaitable[None]] | None = None
    ) -> AbstractAsyncContextManager[UnitOfWork]:
        """A transaction in the store, bounded by the caller's deadline: rolled back
        unless committed. On PostgreSQL, `before` runs first, on the same connection,
        once the store is known to be active, each of its statements committed on its
        own (services.core.db.counters takes numbers so); elsewhere it is not called."""
        return self._unit_of_work(store_id, transaction=True, before=before)

    def reading(self, store_id: int) -> AbstractAsyncContextManager[UnitOfWork]:
        """Reads in the store, each statement on its own (no snapshot across them)."""
        return self._unit_of_work(store_id, transaction=False)

    async def reading_stale_ok(
        self, store_id: int, read: Callable[[UnitOfWork], Awaitable[T]]
    ) -> T:
        """`read(uow)`, on the read replica while it is usable, else on the primary:
        for reads whose caller accepts data up to read_replica_max_lag_seconds old
        (lists and statistics; never a Get that follows the caller's own write).

        Whatever fails on the replica (a connection, a store or row not replicated
        yet: NOT_FOUND) is read again on the primary in the same call, whose answer
        stands. A caller sending `x-commerce-consistency: strong` reads the primary."""
        replica = self.replica
        if replica is not None and replica.usable and not consistency.strong():
            try:
                async with self._on_replica(store_id, replica) as uow:
                    result = await read(uow)
            except Exception as error:  # read again on the primary, below
                await replica.bypass(error)
            else:
                SERVED_BY_REPLICA.inc()
                return result
        async with self.reading(store_id) as uow:
            result = await read(uow)
        SERVED_BY_PRIMARY.inc()
        return result

    @asynccontextmanager
    async def _on_replica(self, store_id: int, replica: ReadReplica) -> AsyncIterator[UnitOfWork]:
        """Reads in the store on the replica (PostgreSQL only, so asyncpg), each
        statement on its own; the store's status too comes from the replica."""
        check_store_id(store_id)
        with store_scope(store_id), replica.queue.entered():
            pooled = await replica.engine.raw_connection()
            driver = pooled.driver_connection
            assert driver is not None  # a checked-out connection always has one
            try:
                with replica.queue.timed():
                    uow = UnitOfWork(
                        store_id, self.traced(DriverTransaction(driver, replica.engine.dialect))
                    )
                    await self.stores.require_active(uow)
                    yield uow
            finally:
                if driver.is_closed() or driver.is_in_transaction():
                    pooled.invalidate()
                pooled.close()

    @asynccontextmanager
    async def _unit_of_work(
        self,
        store_id: int,
        *,
        transaction: bool,
        before: Callable[[UnitOfWork], Awaitable[None]] | None = None,
    ) -> AsyncIterator[UnitOfWork]:
        check_store_id(store_id)

        async def ahead(statements: Transaction) -> None:
            assert before is not None  # passed on only with it
            uow = UnitOfWork(store_id, statements)
            await self.stores.require_active(uow)
            await before(uow)

        # Inside, errors name their resources in this store (stores/7/customers/42).
        with store_scope(store_id), self.queue.entered():
            async with self.maintenance(
                transaction=transaction, before=None if before is None else ahead
            ) as statements:
                with self.queue.timed():
                    uow = UnitOfWork(
                        store_id, statements, self.event_encoders, self.events_committed
                    )
                    await self.stores.require_active(uow)
                    yield uow

    @asynccontextmanager
    async def maintenance(
        self,
        *,
        transaction: bool = True,
        before: Callable[[Transaction], Awaitable[None]] | None = None,
    ) -> AsyncIterator[Transaction]:
        """Statements outside any store: the operator's commands and housekeeping
        (stores themselves, expired request_ids). With `transaction`, one transaction
        bounded by the caller's deadline, rolled back unless committed; on PostgreSQL
        `before` runs ahead of it on the same connection, each statement on its own.
        Without `transaction`, on SQLite, the statements may only read."""
        if self._sqlite is not None:
            # Statements on their own only read (the health probe, the relay's
            # reads): a reader, never waiting for the writer.
            opened = (
                self._sqlite.writing(self._pool_timeout)
                if transaction
                else self._sqlite.reading(self._pool_timeout)
            )
            async with opened as statements:
                yield self.traced(statements)
            return
        if not self._on_asyncpg:
            async with (self.engine if transaction else self._autocommit).connect() as connection:
                if not transaction:
                    yield self.traced(CoreTransaction(connection))
                    return
                began = await connection.begin()
                try:
                    yield self.traced(CoreTransaction(connection, began))
                finally:
                    if began.is_active:  # not committed
                        await began.rollback()
            return
        pooled = await self.engine.raw_connection()
        driver = pooled.driver_connection
        assert driver is not None  # a checked-out connection always has one
        # Whether the connection may serve the next caller: its transaction, if it
        # had one, is known to be over.
        reusable = not transaction
        try:
            if not transaction:
                yield self.traced(DriverTransaction(driver, self.engine.dialect))
                return
            if before is not None:
                # Statements on their own, as a read's: a failed one leaves nothing open.
                reusable = True
                await before(DriverTransaction(driver, self.engine.dialect))
                reusable = False
            began = driver.transaction()
            statements = DriverTransaction(driver, self.engine.dialect, began)
            try:
                await began.start()
                await _bound_by_deadline(statements)
                yield self.traced(statements)
            finally:
                reusable = statements.committed or await _rolled_back(began)
        finally:
            # asyncpg itself waits out a cancelled statement before the next one. But
            # a transaction that did not end cleanly must not reach the next caller:
            # cancelled while its BEGIN was in flight, asyncpg still holds it as the
            # connection's open transaction, and the next caller's would become a
            # savepoint inside it, answer OK and never commit.
            if not reusable or driver.is_closed() or driver.is_in_transaction():
                pooled.invalidate()
            pooled.close()


async def _rolled_back(began: Any) -> bool:
    """Rolls back an asyncpg transaction that was not committed; whether it is over.
    A failed rollback (or one of a transaction that never started) leaves it open:
    the error that brought us here stands."""
    try:
        await began.rollback()
    except Exception:
        return False
    return True


def _deadline_milliseconds() -> int | None:
    """The statement and lock timeout a transaction takes from the caller's deadline."""
    left = deadlines.remaining()
    if left is None:
        return None
    # PostgreSQL takes at most 2**31 - 1 ms (about 24 days); 0 would mean "no limit".
    return min(max(1, int(left * 1000)) + DEADLINE_GRACE_MS, 2**31 - 1)


async def _bound_by_deadline(statements: Transaction) -> None:
    """Makes PostgreSQL end the transaction's statements shortly after the caller's
    deadline (SET LOCAL: the settings end with the transaction)."""
    milliseconds = _deadline_milliseconds()
    if milliseconds is not None:
        await statements.fetch(_BOUND_TRANSACTION, {"ms": str(milliseconds)})
