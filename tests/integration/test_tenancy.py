"""Store-scoped units of work and the store status cache, on a real database."""

from __future__ import annotations

import secrets

import pytest

from services.core.database import UnitOfWork
from services.core.errors import FailedPrecondition, InvalidArgument, NotFound
from services.core.stores import Store, set_store_active
from services.core.tenancy import StoreStatusCache
from tests.conftest import new_store


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def deactivate(sessions, store_id: int) -> None:
    async with UnitOfWork(sessions) as uow:
        await set_store_active(uow.session, store_id, False)
        await uow.commit()


async def test_entering_a_unit_of_work_checks_its_store(database, sessions):
    active = await new_store(sessions)
    inactive = await new_store(sessions, active=False)
    async with database.reading(active) as uow:
        assert uow.store_id == active
    with pytest.raises(FailedPrecondition):
        async with database.writing(inactive):
            pass
    with pytest.raises(NotFound):
        async with database.reading(2**62):
            pass
    with pytest.raises(InvalidArgument):
        async with database.reading(0):
            pass


async def test_the_cache_trusts_a_status_for_its_ttl_only(sessions):
    store_id = await new_store(sessions)
    clock = FakeClock()
    cache = StoreStatusCache(ttl=5, clock=clock)
    async with sessions() as session:
        await cache.require_active(session, store_id)
    await deactivate(sessions, store_id)
    async with sessions() as session:
        clock.now += 4.9
        await cache.require_active(session, store_id)  # still trusted
        clock.now += 0.2
        with pytest.raises(FailedPrecondition):
            await cache.require_active(session, store_id)


async def test_without_ttl_every_check_reads_the_database(sessions):
    store_id = await new_store(sessions)
    cache = StoreStatusCache(ttl=0)
    async with sessions() as session:
        await cache.require_active(session, store_id)
    await deactivate(sessions, store_id)
    async with sessions() as session:
        with pytest.raises(FailedPrecondition):
            await cache.require_active(session, store_id)


async def test_an_unknown_store_is_never_remembered(sessions):
    store_id = 2**40 + secrets.randbelow(2**20)
    cache = StoreStatusCache(ttl=60, clock=FakeClock())
    async with sessions() as session:
        with pytest.raises(NotFound):
            await cache.require_active(session, store_id)
    async with UnitOfWork(sessions) as uow:  # the store is created just after
        uow.session.add(Store(id=store_id, name="late", is_active=True))
        await uow.commit()
    async with sessions() as session:
        await cache.require_active(session, store_id)
