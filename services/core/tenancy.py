"""Store-scoped units of work: every one starts by checking its store, so no module
can forget to, and reads skip the transaction round trips they do not need."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Self

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from services.core import deadlines
from services.core.database import UnitOfWork, create_session_factory
from services.core.reads import ReadQuery, Row
from services.core.stores import check_store_id, store_inactive, store_is_active


class StoreStatusCache:
    """Remembers, for `ttl` seconds, whether a store is active: the check runs on every
    RPC and store status changes rarely. A store that does not exist is never
    remembered, so a new store is usable at once; a deactivation takes effect within
    `ttl` seconds in every process. A ttl of 0 checks the database every time."""

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl
        self._clock = clock
        self._known: dict[int, tuple[bool, float]] = {}

    def known_active(self, store_id: int) -> bool:
        """Whether the store is remembered, and remembered as active."""
        known = self._known.get(store_id)
        return known is not None and known[0] and known[1] > self._clock()

    async def require_active(self, session: AsyncSession | AsyncConnection, store_id: int) -> None:
        check_store_id(store_id)
        now = self._clock()
        known = self._known.get(store_id)
        if known is not None and known[1] > now:
            active = known[0]
        else:
            active = await store_is_active(session, store_id)
            if self._ttl > 0:
                self._known[store_id] = (active, now + self._ttl)
        if not active:
            raise store_inactive(store_id)


# How long after the caller's deadline PostgreSQL stops a statement of a transaction on
# its own. The client-side cancel normally ends it first, at the deadline; this is the
# backstop for when that cancel request is lost.
DEADLINE_GRACE_MS = 100

_BOUND_TRANSACTION = text(
    "SELECT set_config('statement_timeout', :ms, true), set_config('lock_timeout', :ms, true)"
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
            if self._transaction:
                await _bound_by_deadline(self.session)
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

    async def fetch(
        self, store_id: int, query: ReadQuery, params: Mapping[str, Any]
    ) -> Sequence[Row]:
        """The rows of one hot read in the store (services.core.reads): no session, no
        transaction, the store checked as by every unit of work."""
        if self._on_asyncpg and self.stores.known_active(store_id):
            # Nothing to check in the database: the pooled asyncpg connection alone.
            return await query.on_pool(self.engine, params)
        async with self._autocommit.connect() as connection:
            await self.stores.require_active(connection, store_id)
            return await query.all(connection, params)

    async def fetch_one(
        self, store_id: int, query: ReadQuery, params: Mapping[str, Any]
    ) -> Row | None:
        rows = await self.fetch(store_id, query, params)
        return rows[0] if rows else None


async def _bound_by_deadline(session: AsyncSession) -> None:
    """Makes PostgreSQL end the transaction's statements shortly after the deadline
    (SET LOCAL: the settings end with the transaction)."""
    left = deadlines.remaining()
    if left is None or session.get_bind().dialect.name != "postgresql":
        return
    # PostgreSQL takes at most 2**31 - 1 ms (about 24 days); 0 would mean "no limit".
    milliseconds = min(max(1, int(left * 1000)) + DEADLINE_GRACE_MS, 2**31 - 1)
    await session.execute(_BOUND_TRANSACTION, {"ms": str(milliseconds)})
