"""Per-store counters: human-readable, gap-free numbers (customer numbers, order
numbers) handed out without a race, on PostgreSQL and SQLite alike."""

from __future__ import annotations

from sqlalchemy import bindparam

from services.core.db.engine import upsert_insert
from services.core.db.statements import DIALECTS, Statement
from services.core.db.stores import StoreCounter
from services.core.db.unit_of_work import UnitOfWork


def _next_number(dialect: str) -> Statement:
    return Statement(
        upsert_insert(dialect, StoreCounter)
        .values(store_id=bindparam("store_id"), name=bindparam("name"), value=1)
        .on_conflict_do_update(
            index_elements=[StoreCounter.store_id, StoreCounter.name],
            set_={"value": StoreCounter.value + 1},
        )
        .returning(StoreCounter.value)
    )


# Each database spells an upsert its own way.
_NEXT_NUMBER = {dialect: _next_number(dialect) for dialect in DIALECTS}


async def next_store_number(uow: UnitOfWork, counter: str) -> int:
    """Allocates the next number of `counter` in the unit of work's store. The counter
    row stays locked until its transaction ends, so concurrent callers (in any
    process) get distinct numbers, and a rolled-back transaction gives its number
    back. Call it late to hold the lock briefly."""
    return int(await uow.scalar(_NEXT_NUMBER[uow.dialect], {"name": counter}))
