"""Store-scoped units of work: every one starts by checking its store, so no module
can forget to, and reads skip the transaction round trips they do not need.

Two kinds: ORM sessions (`writing`, `reading`) for most of the work, and `statements`,
the fixed-statement `Transaction` of services.core.sql for the hottest calls."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Self

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from services.core import deadlines
from services.core.database import UnitOfWork, create_session_factory
from services.core.errors import NotFound
from services.core.sql import CoreTransaction, DriverTransaction, Row, Statement, Transaction
from services.core.stores import STORE_IS_ACTIVE, check_store_id, store_inactive, store_is_active


class StoreStatusCache:
    """Remembers, for `ttl` seconds, whether a store is active: the check runs on every
    RPC and store status changes rarely. A store that does not exist is never
    remembered, so a new store is usable at once; a deactivation takes effect within
    `ttl` seconds in every process. A ttl of 0 checks the database every time."""

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl
        self._clock = clock
        self._known: dict[int, tuple[bool, float]] = {}

    async def require_active(self, session: AsyncSession, store_id: int) -> None:
        await self._require(store_id, lambda: store_is_active(session, store_id))

    async def require_active_on(self, transaction: Transaction, store_id: int) -> None:
        await self._require(store_id, lambda: _store_is_active_on(transaction, store_id))

    async def _require(self, store_id: int, look_up: Callable[[], Awaitable[bool]]) -> None:
        check_store_id(store_id)
        now = self._clock()
        known = self._known.get(store_id)
        if known is not None and known[1] > now:
            active = known[0]
        else:
            active = await look_up()
            if self._ttl > 0:
                self._known[store_id] = (active, now + self._ttl)
        if not active:
            raise store_inactive(store_id)


async def _store_is_active_on(transaction: Transaction, store_id: int) -> bool:
    is_active = await transaction.scalar(STORE_IS_ACTIVE, {"store_id": store_id})
    if is_active is None:
        raise NotFound("store", str(store_id))
    return bool(is_active)


# How long after the caller's deadline PostgreSQL stops a statement of a transaction on
# its own. The client-side cancel normally ends it first, at the deadline; this is the
# backstop for when that cancel request is lost.
DEADLINE_GRACE_MS = 100

_BOUND_TRANSACTION = Statement(
    text("SELECT set_config('statement_timeout', :ms, true), set_config('lock_timeout', :ms, true)")
)


class StoreUnitOfWork(UnitOfWork):
    """A unit of work for one store; entering it fails unless the store is active.

    A transaction on PostgreSQL under a caller's deadline also gets that deadline as
    its statement and lock timeout, so nothing of it outlives the call for long."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        stores: StoreStatusCache,
        store_id: int,
        *,
        transaction: bool,
    ) -> None:
        super().__init__(sessions)
        self._stores = stores
        self._transaction = transaction
        self.store_id = store_id

    async def __aenter__(self) -> Self:
        await super().__aenter__()
        try:
            # The session's own connection, for the fixed statements (services.core.sql)
            # a unit of work shares with the modules: counters, idempotency keys.
            self.statements = await CoreTransaction.of(self.session)
            if self._transaction:
                await _bound_by_deadline(self.statements)
            await self._stores.require_active(self.session, self.store_id)
        except BaseException:
            await self.session.close()
            raise
        return self


class TenantDatabase:
    """What a module's service layer gets instead of an engine."""

    def __init__(self, engine: AsyncEngine, *, store_cache_seconds: float = 0.0) -> None:
        self.engine = engine
        self.stores = StoreStatusCache(store_cache_seconds)
        self._sessions = create_session_factory(engine)
        # Each statement commits on its own: no BEGIN and ROLLBACK round trips around
        # reads that need no transaction.
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._on_asyncpg = engine.dialect.driver == "asyncpg"
        self._read_sessions = create_session_factory(self._autocommit)

    def writing(self, store_id: int) -> StoreUnitOfWork:
        """A transaction in the store: rolled back unless committed."""
        return StoreUnitOfWork(self._sessions, self.stores, store_id, transaction=True)

    def reading(self, store_id: int) -> StoreUnitOfWork:
        """Reads in the store, each statement on its own (no snapshot across them)."""
        return StoreUnitOfWork(self._read_sessions, self.stores, store_id, transaction=False)

    @asynccontextmanager
    async def statements(self, store_id: int, *, transaction: bool) -> AsyncIterator[Transaction]:
        """Fixed statements in the store (services.core.sql), the store checked first.
        With `transaction`, one transaction bounded by the caller's deadline, committed
        when the block ends normally and rolled back when it raises; without, each
        statement on its own."""
        if not self._on_asyncpg:
            engine = self.engine if transaction else self._autocommit
            async with engine.begin() if transaction else engine.connect() as connection:
                core = CoreTransaction(connection)
                await self.stores.require_active_on(core, store_id)
                yield core
            return
        pooled = await self.engine.raw_connection()
        driver = pooled.driver_connection
        assert driver is not None  # a checked-out connection always has one
        try:
            statements = DriverTransaction(driver, self.engine.dialect)
            if transaction:
                async with driver.transaction():
                    await _bound_by_deadline(statements)
                    await self.stores.require_active_on(statements, store_id)
                    yield statements
            else:
                await self.stores.require_active_on(statements, store_id)
                yield statements
        finally:
            # asyncpg itself waits out a cancelled statement before the next one. A
            # transaction whose rollback did not finish (its task cancelled again)
            # must not reach the next caller.
            if driver.is_closed() or driver.is_in_transaction():
                pooled.invalidate()
            pooled.close()

    async def fetch(
        self, store_id: int, statement: Statement, params: Mapping[str, Any]
    ) -> Sequence[Row]:
        """The rows of one hot read in the store: no session, no transaction."""
        async with self.statements(store_id, transaction=False) as statements:
            return await statements.fetch(statement, params)


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
    if milliseconds is not None and statements.dialect == "postgresql":
        await statements.fetch(_BOUND_TRANSACTION, {"ms": str(milliseconds)})
