"""Rows a module keeps only for a while (what a retried request needs to be answered
again), deleted by the server's purge loop in small batches, oldest first. A module
registers how it deletes its own while mounting; this module knows none of them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, any_, bindparam, delete, func, literal_column, select
from sqlalchemy.orm import InstrumentedAttribute

from services.core.db.engine import UtcDateTime
from services.core.db.statements import Statement, Transaction

# Deletes up to `batch` rows older than `before` in the given transaction; returns
# how many it deleted.
Purge = Callable[[Transaction, datetime, int], Awaitable[int]]


class RetentionRegistry:
    """The purges of the mounted modules, by name (for the logs)."""

    def __init__(self) -> None:
        self._purges: dict[str, Purge] = {}

    def register(self, name: str, purge: Purge) -> None:
        if name in self._purges:
            raise ValueError(f"a purge named {name} is registered already")
        self._purges[name] = purge

    def __iter__(self) -> Iterator[tuple[str, Purge]]:
        return iter(self._purges.items())


def delete_oldest(
    model: type[Any], age: InstrumentedAttribute[datetime], dialect: str
) -> Statement:
    """Deletes the oldest rows of `model` whose `age` is before :before, up to :batch.
    They are found by age, oldest first (an index on `age` serves it without reading
    the rows that happen to be expired), and deleted by their physical row ids:
    PostgreSQL's ctid (a TID scan, where a join back through the key could turn into
    a scan of the table), SQLite's rowid. Returns one row per deleted row."""
    row_id: ColumnElement[Any] = literal_column("ctid" if dialect == "postgresql" else "rowid")
    expired = (
        select(row_id)
        .where(age < bindparam("before", type_=UtcDateTime()))
        .order_by(age)
        .limit(bindparam("batch"))
    )
    if dialect == "postgresql":
        chosen = row_id == any_(func.array(expired.scalar_subquery()))
    else:
        chosen = row_id.in_(expired)
    return Statement(delete(model).where(chosen).returning(literal_column("1")))
