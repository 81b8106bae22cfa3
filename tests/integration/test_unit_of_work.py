"""The one way to a store's data (services.core.db.unit_of_work), on a real database:
a unit of work checks its store, scopes every statement to it, commits or rolls back
as a whole, carries the caller's deadline to PostgreSQL, and a connection
interrupted mid-statement never serves another caller. Also the store status cache."""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets

import pytest
from sqlalchemy import bindparam, select, text, update
from sqlalchemy.exc import IntegrityError

from services.core import deadlines
from services.core.db.engine import create_engine
from services.core.db.statements import Statement, insert_row
from services.core.db.stores import Store, StoreCounter
from services.core.db.unit_of_work import (
    DEADLINE_GRACE_MS,
    StoreStatusCache,
    TenantDatabase,
    UnitOfWork,
)
from services.core.domain.errors import FailedPrecondition, InvalidArgument, NotFound
from services.core.events.feed_snapshots import FeedSnapshots
from services.core.rpc.statuses import is_deadline_timeout
from tests.conftest import new_store
from tests.orm import UnitOfWork as OrmUnitOfWork
from tests.orm import set_store_active

TIMEOUTS = Statement(
    text(
        "SELECT current_setting('statement_timeout') AS statement,"
        " current_setting('lock_timeout') AS lock"
    )
)
STORE_NAME = Statement(select(Store.name).where(Store.id == bindparam("store_id")))
SLEEP = Statement(text("SELECT pg_sleep(5)"))
NEW_COUNTER = insert_row(StoreCounter.__table__)
COUNTER_VALUE = Statement(
    select(StoreCounter.value).where(
        StoreCounter.store_id == bindparam("store_id"), StoreCounter.name == bindparam("name")
    )
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def deactivate(sessions, store_id: int) -> None:
    async with OrmUnitOfWork(sessions) as uow:
        await set_store_active(uow.session, store_id, False)
        await uow.commit()


async def test_entering_a_unit_of_work_checks_its_store(database, sessions):
    active = await new_store(sessions)
    inactive = await new_store(sessions, active=False)
    for unit_of_work in (database.reading, database.writing):
        async with unit_of_work(active) as uow:
            assert uow.store_id == active
        with pytest.raises(FailedPrecondition):
            async with unit_of_work(inactive):
                pass
        with pytest.raises(NotFound):
            async with unit_of_work(2**62):
                pass
        with pytest.raises(InvalidArgument):
            async with unit_of_work(0):
                pass


async def test_every_statement_is_bound_to_the_unit_of_works_store(database, sessions):
    mine, other = await new_store(sessions), await new_store(sessions)
    async with database.reading(mine) as uow:
        assert await uow.scalar(STORE_NAME) == await uow.scalar(STORE_NAME, {"store_id": other})
        (row,) = await uow.fetch(
            Statement(select(Store.id).where(Store.id == bindparam("store_id")))
        )
        assert row["id"] == mine


async def test_a_unit_of_work_commits_or_rolls_back_as_a_whole(database, store_id):
    row = {"name": "test-counter", "value": 7}

    async def insert_then_fail() -> None:
        async with database.writing(store_id) as uow:
            await uow.execute(NEW_COUNTER, row)
            raise RuntimeError("the caller failed after the insert")

    with pytest.raises(RuntimeError):
        await insert_then_fail()
    async with database.writing(store_id) as uow:
        await uow.execute(NEW_COUNTER, row)  # the first insert was rolled back
        # Not committed: rolled back as the block ends.
    async with database.writing(store_id) as uow:
        await uow.execute(NEW_COUNTER, row)
        await uow.commit()
    # A constraint violation is SQLAlchemy's IntegrityError on every path, and the
    # connection that saw it goes on serving.
    for _ in range(database.engine.pool.size() + 1):
        with pytest.raises(IntegrityError):
            async with database.writing(store_id) as uow:
                await uow.execute(NEW_COUNTER, row)
    async with database.reading(store_id) as uow:
        assert await uow.scalar(STORE_NAME)


async def test_a_transaction_under_a_deadline_carries_it_to_postgresql(database, backend, store_id):
    if backend != "postgresql":
        pytest.skip("statement and lock timeouts are PostgreSQL settings")

    async def timeouts(unit_of_work) -> tuple[str, str]:
        async with unit_of_work as uow:
            row = await uow.fetch_one(TIMEOUTS)
            assert row is not None
            return row["statement"], row["lock"]

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


async def test_an_interrupted_statement_leaves_no_broken_connection(database, backend, store_id):
    if backend != "postgresql":
        pytest.skip("pg_sleep is PostgreSQL's")
    # PostgreSQL ends the statement at the deadline (the driver's own error: the
    # interceptor maps it, like SQLAlchemy's, to DEADLINE_EXCEEDED).
    with deadlines.bounded_by(0.2), pytest.raises(Exception) as raised:  # noqa: PT011
        async with database.writing(store_id) as uow:
            await uow.fetch(SLEEP)
    assert is_deadline_timeout(raised.value)

    async def sleep() -> None:
        async with database.reading(store_id) as uow:
            await uow.fetch(SLEEP)

    # Cancelled from the caller's side, as a lost call's task is, on every connection.
    for _ in range(database.engine.pool.size()):
        call = asyncio.ensure_future(sleep())
        await asyncio.sleep(0.05)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
    for _ in range(2 * database.engine.pool.size()):
        async with database.reading(store_id) as uow:
            assert await uow.scalar(STORE_NAME)


async def require_active(database, cache: StoreStatusCache, store_id: int) -> None:
    async with database.maintenance(transaction=False) as statements:
        await cache.require_active(UnitOfWork(store_id, statements))


async def test_the_cache_trusts_a_status_for_its_ttl_only(database, sessions):
    store_id = await new_store(sessions)
    clock = FakeClock()
    cache = StoreStatusCache(ttl=5, clock=clock)
    await require_active(database, cache, store_id)
    await deactivate(sessions, store_id)
    clock.now += 4.9
    await require_active(database, cache, store_id)  # still trusted
    clock.now += 0.2
    with pytest.raises(FailedPrecondition):
        await require_active(database, cache, store_id)


async def test_without_ttl_every_check_reads_the_database(database, sessions):
    store_id = await new_store(sessions)
    cache = StoreStatusCache(ttl=0)
    await require_active(database, cache, store_id)
    await deactivate(sessions, store_id)
    with pytest.raises(FailedPrecondition):
        await require_active(database, cache, store_id)


async def test_an_unknown_store_is_never_remembered(database, sessions):
    store_id = 2**40 + secrets.randbelow(2**20)
    cache = StoreStatusCache(ttl=60, clock=FakeClock())
    with pytest.raises(NotFound):
        await require_active(database, cache, store_id)
    async with OrmUnitOfWork(sessions) as uow:  # the store is created just after
        uow.session.add(Store(id=store_id, name="late", is_active=True))
        await uow.commit()
    await require_active(database, cache, store_id)


async def test_a_write_cancelled_at_any_point_leaves_the_next_one_durable(
    settings, database, backend, store_id
):
    """Writes cancelled at random points, the next write on the same connection then
    committed: that write is in the database for everyone. (A cancel that landed
    while BEGIN was in flight once left asyncpg believing the dead transaction was
    still open: the next write became a savepoint inside it, answered OK and was
    never committed.)"""
    one_connection = TenantDatabase(create_engine(settings.database_url, pool_size=1))
    rng = random.Random(11)  # noqa: S311 (timing, not secrets)
    try:
        for attempt in range(200):

            async def write(name: str) -> None:
                async with one_connection.writing(store_id) as uow:
                    await uow.execute(NEW_COUNTER, {"name": name, "value": 1})
                    await uow.commit()

            doomed = asyncio.ensure_future(write(f"cancelled-{attempt}"))
            await asyncio.sleep(rng.uniform(0, 0.003))
            doomed.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await doomed
            await write(f"kept-{attempt}")
            async with database.reading(store_id) as uow:
                kept = await uow.scalar(COUNTER_VALUE, {"name": f"kept-{attempt}"})
            assert kept == 1, f"the write after attempt {attempt} was acknowledged but is not there"
    finally:
        one_connection.close()
        await one_connection.engine.dispose()


async def test_a_snapshot_reads_one_state_of_the_database_and_keeps_nothing(
    database, settings, store_id
):
    snapshots = FeedSnapshots(database)
    # Another engine: a connection of its own, also on SQLite (one per engine).
    elsewhere = TenantDatabase(create_engine(settings.database_url, pool_size=1))
    seen = {"name": "snapshot-seen"}
    kept = {"name": "snapshot-kept"}
    try:
        async with snapshots.snapshot(store_id) as uow:
            assert await uow.scalar(COUNTER_VALUE, seen) is None
            async with elsewhere.writing(store_id) as writer:
                await writer.execute(NEW_COUNTER, seen | {"value": 1})
                await writer.commit()
            # Committed meanwhile, and unseen: the snapshot began as it opened.
            assert await uow.scalar(COUNTER_VALUE, seen) is None
            assert await uow.scalar(STORE_NAME)
        async with snapshots.snapshot(store_id) as uow:
            assert await uow.scalar(COUNTER_VALUE, seen) == 1
            # A snapshot writes nothing.
            with pytest.raises(TypeError):
                await uow.execute(NEW_COUNTER, kept | {"value": 2})
        async with elsewhere.reading(store_id) as uow:
            assert await uow.scalar(COUNTER_VALUE, kept) is None
        # The connection went back clean: the next unit of work is no snapshot.
        async with database.reading(store_id) as uow:
            assert await uow.scalar(COUNTER_VALUE, seen) == 1
    finally:
        elsewhere.close()
        await elsewhere.engine.dispose()


async def test_reads_are_answered_while_a_write_transaction_is_open(database, store_id):
    """A read does not wait for a write in progress, and does not see it. (On SQLite
    every unit of work once shared one connection: a read waited for each open write
    transaction to end.)"""
    row = {"name": "written-meanwhile", "value": 1}
    written = asyncio.Event()
    release = asyncio.Event()

    async def write() -> None:
        async with database.writing(store_id) as uow:
            await uow.execute(NEW_COUNTER, row)
            written.set()
            await release.wait()
            await uow.commit()

    async def read() -> object:
        async with database.reading(store_id) as uow:
            return await uow.scalar(COUNTER_VALUE, {"name": row["name"]})

    writing = asyncio.ensure_future(write())
    try:
        await written.wait()
        # The bound only turns a read stuck behind the write into a failure.
        async with asyncio.timeout(10):
            seen = await asyncio.gather(*(read() for _ in range(8)))
        assert seen == [None] * 8
    finally:
        release.set()
        await writing
    assert await read() == 1


BUMP_COUNTER = Statement(
    update(StoreCounter)
    .where(StoreCounter.store_id == bindparam("store_id"), StoreCounter.name == bindparam("name"))
    .values(value=StoreCounter.value + 1)
)


async def test_concurrent_writers_that_read_first_all_commit(database, settings, store_id):
    """Writes that read before they write, from many tasks and from two connections
    to the database at once (another process's, say), interleaved with reads: every
    one commits, none is refused as "database is locked". (On SQLite a transaction
    that read first and then found another writer's commit could never upgrade to a
    write: hence BEGIN IMMEDIATE, which waits for the write lock at BEGIN.)"""
    elsewhere = TenantDatabase(create_engine(settings.database_url, pool_size=2))
    name = {"name": "bumped"}
    async with database.writing(store_id) as uow:
        await uow.execute(NEW_COUNTER, name | {"value": 0})
        await uow.commit()

    async def bump(through: TenantDatabase) -> None:
        async with through.writing(store_id) as uow:
            # A read first: the other writers run while it waits for its answer.
            assert await uow.scalar(COUNTER_VALUE, name) is not None
            await uow.execute(BUMP_COUNTER, name)
            await uow.commit()

    async def read(through: TenantDatabase) -> None:
        async with through.reading(store_id) as uow:
            assert await uow.scalar(COUNTER_VALUE, name) is not None

    try:
        await asyncio.gather(
            *(bump(through) for _ in range(40) for through in (database, elsewhere)),
            *(read(through) for _ in range(40) for through in (database, elsewhere)),
        )
    finally:
        elsewhere.close()
        await elsewhere.engine.dispose()
    async with database.reading(store_id) as uow:
        assert await uow.scalar(COUNTER_VALUE, name) == 80
