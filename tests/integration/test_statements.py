"""The fixed-statement path of the hot calls (services.core.sql, TenantDatabase.
statements): on PostgreSQL straight on the pooled asyncpg connection, on SQLite
through SQLAlchemy Core. Same store checks and deadlines as the units of work, and a
connection interrupted mid-statement never serves another caller."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import bindparam, select, text
from sqlalchemy.exc import IntegrityError

from services.core import deadlines
from services.core.errors import FailedPrecondition, InvalidArgument, NotFound
from services.core.grpc_errors import is_deadline_timeout
from services.core.sql import Statement, insert_row
from services.core.stores import Store, StoreCounter
from services.core.tenancy import DEADLINE_GRACE_MS
from tests.conftest import new_store

SETTINGS = Statement(
    text(
        "SELECT current_setting('statement_timeout') AS statement,"
        " current_setting('lock_timeout') AS lock"
    )
)
STORE_NAME = Statement(select(Store.name).where(Store.id == bindparam("store_id")))
SLEEP = Statement(text("SELECT pg_sleep(5)"))
NEW_COUNTER = insert_row(StoreCounter.__table__)


async def test_statements_check_their_store(database, sessions):
    active = await new_store(sessions)
    inactive = await new_store(sessions, active=False)
    for transaction in (True, False):
        async with database.statements(active, transaction=transaction) as statements:
            name = await statements.scalar(STORE_NAME, {"store_id": active})
            assert name.startswith("store ")
        with pytest.raises(FailedPrecondition):
            async with database.statements(inactive, transaction=transaction):
                pass
        with pytest.raises(NotFound):
            async with database.statements(2**62, transaction=transaction):
                pass
        with pytest.raises(InvalidArgument):
            async with database.statements(0, transaction=transaction):
                pass


async def test_a_transaction_commits_or_rolls_back_as_a_whole(database, store_id):
    row = {"store_id": store_id, "name": "test-counter", "value": 7}

    async def insert_then_fail() -> None:
        async with database.statements(store_id, transaction=True) as statements:
            await statements.execute(NEW_COUNTER, row)
            raise RuntimeError("the caller failed after the insert")

    with pytest.raises(RuntimeError):
        await insert_then_fail()
    async with database.statements(store_id, transaction=True) as statements:
        await statements.execute(NEW_COUNTER, row)  # the first insert was rolled back
    # A constraint violation is SQLAlchemy's IntegrityError on every path, and the
    # connection that saw it goes on serving.
    for _ in range(database.engine.pool.size() + 1):
        with pytest.raises(IntegrityError):
            async with database.statements(store_id, transaction=True) as statements:
                await statements.execute(NEW_COUNTER, row)
    assert await database.fetch(store_id, STORE_NAME, {"store_id": store_id})


async def test_a_transaction_carries_the_deadline_to_postgresql(database, backend, store_id):
    if backend != "postgresql":
        pytest.skip("statement and lock timeouts are PostgreSQL settings")
    with deadlines.bounded_by(2.5):
        async with database.statements(store_id, transaction=True) as statements:
            bounded = await statements.fetch_one(SETTINGS, {})
        # Outside a transaction a SET LOCAL would not hold: reads are not bounded.
        (unbounded,) = await database.fetch(store_id, SETTINGS, {})
        assert dict(unbounded) == {"statement": "0", "lock": "0"}
    assert bounded is not None
    assert bounded["statement"] == bounded["lock"]
    assert 2_400 <= int(bounded["statement"].removesuffix("ms")) <= 2_500 + DEADLINE_GRACE_MS
    async with database.statements(store_id, transaction=True) as statements:
        after = await statements.fetch_one(SETTINGS, {})
        assert dict(after or {}) == {"statement": "0", "lock": "0"}


async def test_an_interrupted_statement_leaves_no_broken_connection(database, backend, store_id):
    if backend != "postgresql":
        pytest.skip("pg_sleep is PostgreSQL's")
    # PostgreSQL ends the statement at the deadline (the driver's own error: the
    # interceptor maps it, like SQLAlchemy's, to DEADLINE_EXCEEDED).
    with deadlines.bounded_by(0.2), pytest.raises(Exception) as raised:  # noqa: PT011
        async with database.statements(store_id, transaction=True) as statements:
            await statements.fetch(SLEEP, {})
    assert is_deadline_timeout(raised.value)
    # Cancelled from the caller's side, as a lost call's task is, on every connection.
    for _ in range(database.engine.pool.size()):
        call = asyncio.ensure_future(database.fetch(store_id, SLEEP, {}))
        await asyncio.sleep(0.05)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
    for _ in range(2 * database.engine.pool.size()):
        assert await database.fetch(store_id, STORE_NAME, {"store_id": store_id})
