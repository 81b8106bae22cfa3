"""Numbers taken before the caller's transaction (services.core.db.counters), on a
real database: their statement commits without waiting for its WAL flush, and that
must end with it, or every transaction after it on the connection, an order's
included, would commit as lightly."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from services.core.db.counters import TakenNumber
from services.core.db.engine import create_engine
from services.core.db.statements import Statement
from services.core.db.unit_of_work import TenantDatabase

_SYNCHRONOUS_COMMIT = Statement(text("SELECT current_setting('synchronous_commit')"))


async def test_a_number_taken_alone_leaves_later_commits_synchronous(backend, settings, store_id):
    if backend != "postgresql":
        pytest.skip("SQLite takes numbers in the caller's transaction")
    # One connection: whatever runs after the number runs on the connection it took.
    database = TenantDatabase(create_engine(settings.database_url, pool_size=1))
    try:
        for expected in (1, 2):
            number = TakenNumber("order")
            async with database.writing(store_id, before=number.take) as uow:
                assert await uow.scalar(_SYNCHRONOUS_COMMIT) == "on"
            assert number.value == expected
        async with database.reading(store_id) as uow:
            assert await uow.scalar(_SYNCHRONOUS_COMMIT) == "on"
    finally:
        await database.engine.dispose()


async def test_sqlite_takes_no_number_before_the_transaction(backend, database, store_id):
    if backend != "sqlite":
        pytest.skip("PostgreSQL takes it")
    number = TakenNumber("order")
    async with database.writing(store_id, before=number.take):
        pass
    assert number.value is None
