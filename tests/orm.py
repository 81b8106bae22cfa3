"""ORM sessions for tests that arrange or inspect rows directly (a store, a customer
with a given email, a ledger row to count). The service suite itself reaches its
data only through services.core.db.unit_of_work."""

from __future__ import annotations

from types import TracebackType
from typing import Self

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from services.core.db.stores import Store
from services.core.domain.errors import NotFound


def create_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


class UnitOfWork:
    """One session and transaction, rolled back unless `commit()` was called:

    async with UnitOfWork(sessions) as uow:
        uow.session.add(...)
        await uow.commit()
    """

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def __aenter__(self) -> Self:
        self.session = self._sessions()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        # close() rolls back what was not committed and keeps loaded objects readable.
        await self.session.close()

    async def commit(self) -> None:
        await self.session.commit()


async def create_store(session: AsyncSession, name: str) -> Store:
    store = Store(name=name, is_active=True)
    session.add(store)
    await session.flush()
    return store


async def set_store_active(session: AsyncSession, store_id: int, active: bool) -> Store:
    store = await session.get(Store, store_id)
    if store is None:
        raise NotFound("store", str(store_id))
    store.is_active = active
    return store
