"""Per-store counters: human-readable numbers (customer numbers, order numbers) handed
out without a race, on PostgreSQL and SQLite alike, by one row per store and counter.

Two ways to take a number:

- `next_store_number`, in the caller's transaction: the counter row stays locked
  until that transaction ends, commit and its WAL flush included, so a store's
  numbers are gap-free and follow the order its transactions commit in; but the
  store's writers of that counter run one at a time.
- `TakenNumber`, on PostgreSQL, before the caller's transaction, in one
  statement that is a transaction of its own and commits without waiting for its
  WAL flush: the row is locked for the statement alone, so a busy store's writers
  no longer queue on it. The numbers stay unique and increase in the order they are
  taken (not always the order their records commit in), and a number whose record
  never commits is not used again: a gap. A number is never lost for a committed
  record: that record's commit flushes the WAL up to itself, and so the counter's
  earlier change; a crash can only hand out again numbers no committed record has.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, String, bindparam, func, literal, select, true

from services.core.db.engine import upsert_insert
from services.core.db.idempotency import RequestKey, is_claimed, key_params
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


def _taken_alone(*, unless_claimed: bool) -> Statement:
    """The upsert of _next_number, run outside any transaction, whose RETURNING also
    sets synchronous_commit off until the statement's own transaction ends: that
    transaction commits without waiting for the WAL flush, and nothing after it is
    affected. With `unless_claimed`, no number (no row) when a committed request
    already claimed the request key bound (services.core.db.idempotency): its retry
    needs none. (In RETURNING, not a FROM clause: the unguarded upsert stays one
    plain row of values, which a sharded database routes to the store's shard.)"""
    upsert = upsert_insert("postgresql", StoreCounter)
    if unless_claimed:
        row = select(
            bindparam("store_id", type_=BigInteger()), bindparam("name", type_=String()), literal(1)
        ).where(~is_claimed())
        upsert = upsert.from_select(["store_id", "name", "value"], row)
    else:
        upsert = upsert.values(store_id=bindparam("store_id"), name=bindparam("name"), value=1)
    return Statement(
        upsert.on_conflict_do_update(
            index_elements=[StoreCounter.store_id, StoreCounter.name],
            set_={"value": StoreCounter.value + 1},
        ).returning(StoreCounter.value, func.set_config("synchronous_commit", "off", true()))
    )


_TAKE = _taken_alone(unless_claimed=False)
_TAKE_UNLESS_CLAIMED = _taken_alone(unless_claimed=True)


class TakenNumber:
    """A number of `counter` taken before a unit of work's transaction, on its
    connection: pass `take` as TenantDatabase.writing's `before`. On PostgreSQL,
    `value` is then the next number of the counter in the store, committed at once
    (see the module's description); it stays None when the request of `unless` was
    already carried out (its retry finds what it made, and needs no number) and on
    SQLite, whose one writer at a time gains nothing from it. The caller then takes
    its number in its transaction, with next_store_number."""

    def __init__(self, counter: str, *, unless: RequestKey | None = None) -> None:
        self.counter = counter
        self.unless = unless
        self.value: int | None = None

    async def take(self, uow: UnitOfWork) -> None:
        """Runs outside any transaction (writing's `before` does): its statement
        commits on its own, lightly."""
        params = {"name": self.counter}
        if self.unless is None:
            self.value = int(await uow.scalar(_TAKE, params))
            return
        taken = await uow.scalar(_TAKE_UNLESS_CLAIMED, params | key_params(self.unless))
        self.value = None if taken is None else int(taken)
