"""Store-scoped units of work and the store status cache, on a real database."""

from __future__ import annotations

import secrets

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from services.core import deadlines
from services.core.database import UnitOfWork
from services.core.errors import FailedPrecondition, InvalidArgument, NotFound
from services.core.grpc_errors import is_deadline_timeout
from services.core.stores import Store, set_store_active
from services.core.tenancy import DEADLINE_GRACE_MS, StoreStatusCache
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


async def test_a_transaction_under_a_deadline_carries_it_to_postgresql(database, backend, store_id):
    if backend != "postgresql":
        pytest.skip("statement and lock timeouts are PostgreSQL settings")

    async def timeouts(unit_of_work) -> tuple[str, str]:
        async with unit_of_work as uow:
            statement = await uow.session.scalar(text("SHOW statement_timeout"))
            lock = await uow.session.scalar(text("SHOW lock_timeout"))
            return statement, lock

    with deadlines.bounded_by(2.5):
        statement, lock = await timeouts(database.writing(store_id))
        # Reads run outside transactions, where a SET LOCAL would not hold.
        assert await timeouts(database.reading(store_id)) == ("0", "0")
    assert statement == lock
    assert 2_400 <= int(statement.removesuffix("ms")) <= 2_500 + DEADLINE_GRACE_MS
    # A deadline weeks away is as far as PostgreSQL can count, not an error.
    with deadlines.bounded_by(60 * 24 * 3600):
        assert await timeouts(database.writing(store_id)) == ("2147483647ms",) * 2
    # Without a deadline, and after the transaction, nothing is left set.
    assert await timeouts(database.writing(store_id)) == ("0", "0")


async def test_postgresql_stops_a_statement_at_the_deadline(database, backend, store_id):
    if backend != "postgresql":
        pytest.skip("statement and lock timeouts are PostgreSQL settings")
    with deadlines.bounded_by(0.2), pytest.raises(DBAPIError) as raised:
        async with database.writing(store_id) as uow:
            await uow.session.execute(text("SELECT pg_sleep(5)"))
    assert is_deadline_timeout(raised.value)
