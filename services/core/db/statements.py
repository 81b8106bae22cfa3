"""Statements, run the fastest way each database allows.

The ORM and SQLAlchemy's statement execution cost more CPU than the database work of
a call: GetCustomer spent more time building a Customer than reading it, and
CreateOrder's five statements spent more in SQLAlchemy than in asyncpg (profiles and
figures in docs/performance.md). So every query is a fixed Core statement, run
through a small `Transaction` interface:

- on PostgreSQL, `DriverTransaction` sends each statement, compiled once by
  SQLAlchemy, straight to the pooled asyncpg connection, which prepares it once per
  connection and returns rows with the right Python types;
- on SQLite (the embedded default), `SqliteTransaction` (services.core.db.sqlite)
  does the same on the sqlite3 connection, converting values with SQLAlchemy's
  type processing, which that database needs; `CoreTransaction` runs statements
  through SQLAlchemy Core, for SQLite connections opened by SQLAlchemy (a feed
  snapshot's).

The queries are written once against `Transaction`; rows are read-only mappings from
column name to value."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, cast

import asyncpg
from sqlalchemy import (
    ARRAY,
    BindParameter,
    ColumnElement,
    Table,
    Update,
    any_,
    bindparam,
    func,
    insert,
    select,
    true,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncTransaction
from sqlalchemy.sql.expression import ClauseElement, Executable
from sqlalchemy.sql.visitors import replacement_traverse

from services.core.db.engine import Base, upsert_insert

Row = Mapping[str, Any]

# The databases a statement may be written for (a Transaction's `dialect`).
DIALECTS = ("postgresql", "sqlite")


class Statement:
    """One fixed Core statement whose values are all bindparam()s."""

    def __init__(self, statement: Executable) -> None:
        self.statement = statement
        self._for_asyncpg: tuple[str, tuple[str, ...], dict[str, Any]] | None = None
        self._for_core: tuple[Executable, Mapping[str, str] | None] | None = None
        # The statement as services.core.db.sqlite runs it, made there on first use.
        self.for_sqlite: object | None = None

    def for_asyncpg(self, dialect: Dialect) -> tuple[str, tuple[str, ...], dict[str, Any]]:
        """The SQL text with $1, $2..., the parameter names in that order, and the
        values of the parameters the statement fixes itself (a literal 1, say)."""
        if self._for_asyncpg is None:
            compiled = cast(ClauseElement, self.statement).compile(dialect=dialect)
            names = tuple(getattr(compiled, "positiontup", None) or ())
            binds = getattr(compiled, "binds", {})
            fixed = {
                name: binds[name].value
                for name in names
                if name in binds and not binds[name].required
            }
            self._for_asyncpg = (compiled.string, names, fixed)
        return self._for_asyncpg

    def for_core(self) -> tuple[Executable, Mapping[str, str] | None]:
        """The statement to run through SQLAlchemy Core and, for an UPDATE, the name
        each of its parameters is bound as. SQLAlchemy reads an execution parameter
        named after a column of an UPDATE's table as one more column to SET, which
        collides with a WHERE bind of that name (store_id, in every statement): so
        on this path an UPDATE's binds named after its columns take a prefix, and
        it gets only the parameters it binds."""
        if self._for_core is None:
            self._for_core = _renamed_update_binds(self.statement)
        return self._for_core

    def arguments(self, dialect: Dialect, params: Mapping[str, Any]) -> tuple[str, list[Any]]:
        """The SQL text and its positional arguments for asyncpg."""
        sql, names, fixed = self.for_asyncpg(dialect)
        return sql, [params[name] if name in params else fixed[name] for name in names]


_RENAMED = "bound_"


def _renamed_update_binds(statement: Executable) -> tuple[Executable, Mapping[str, str] | None]:
    if not isinstance(statement, Update):
        return statement, None
    columns = set(statement.table.c.keys())
    names: dict[str, str] = {}

    def rename(element: Any, **_: Any) -> BindParameter[Any] | None:
        if not (isinstance(element, BindParameter) and element.required):
            return None
        if element.key not in columns:
            names[element.key] = element.key
            return None
        names[element.key] = _RENAMED + element.key
        return bindparam(names[element.key], type_=element.type)

    return cast(Executable, replacement_traverse(statement, {}, rename)), names


def in_store(model: type[Base], *keys: str) -> tuple[ColumnElement[bool], ...]:
    """WHERE conditions for the unit of work's store's rows of `model` (it binds
    `store_id`) whose `keys` columns equal the parameters of the same names."""
    columns = model.__table__.c
    return tuple(columns[name] == bindparam(name) for name in ("store_id", *keys))


def one_of(column: ColumnElement[Any], name: str) -> dict[str, ColumnElement[bool]]:
    """Per dialect: the condition that `column` is one of the list bound as `name`.
    PostgreSQL's statements run through asyncpg, which takes the list as one array
    (`= ANY`); SQLite's get an IN list SQLAlchemy expands."""
    return {
        "postgresql": column == any_(bindparam(name, type_=ARRAY(column.type))),
        "sqlite": column.in_(bindparam(name, expanding=True)),
    }


def rows_of_keys(
    model: type[Base], key: str, keys_param: str, *, order_by: Sequence[str] = ()
) -> dict[str, Statement]:
    """Per dialect: the store's rows of `model` whose `key` column is one of the list
    bound as `keys_param`, every column, in `order_by` order.

    On PostgreSQL each key is a probe of its own through the index that starts with
    (store_id, key), in a LATERAL subquery that OFFSET 0 keeps the planner from
    flattening: the plan is the same whatever the planner believes of the table.
    (Given the list as `= ANY(...)`, a plan made while the store looked small reads
    the whole store by store_id and filters it.) SQLite gets an IN list, which its
    planner always looks up by the key."""
    table = model.__table__
    order = [table.c[name] for name in order_by]
    in_list = (
        select(table)
        .where(*in_store(model), table.c[key].in_(bindparam(keys_param, expanding=True)))
        .order_by(*order)
    )
    keys_type = ARRAY(table.c[key].type)
    wanted = (
        func.unnest(bindparam(keys_param, type_=keys_type))
        .table_valued(key)
        .render_derived(name="wanted")
    )
    probe = (
        select(table)
        .where(*in_store(model), table.c[key] == wanted.c[key])
        .offset(0)
        .lateral("found")
    )
    probes = select(probe).select_from(wanted).join(probe, true())
    return {
        "postgresql": Statement(probes.order_by(*(probe.c[name] for name in order_by))),
        "sqlite": Statement(in_list),
    }


def insert_unless_present(
    model: type[Base],
    key: Sequence[str],
    *,
    fixed: Mapping[str, Any],
    returning: Sequence[Any] = (),
) -> dict[str, Statement]:
    """An INSERT of one row (each column the parameter of its name, but the `fixed`
    ones) that does nothing when a row with the same `key` exists: per dialect, as
    each database spells ON CONFLICT with an insert() of its own."""
    values = {
        column.name: fixed[column.name] if column.name in fixed else bindparam(column.name)
        for column in model.__table__.c
    }
    return {
        dialect: Statement(
            upsert_insert(dialect, model)
            .values(values)
            .on_conflict_do_nothing(index_elements=list(key))
            .returning(*returning)
        )
        for dialect in DIALECTS
    }


def insert_row(table: Table) -> Statement:
    """An INSERT of one row that gives every column (a fixed statement has no
    defaults to fill in)."""
    values: dict[str, Any] = {column.name: bindparam(column.name) for column in table.c}
    return Statement(insert(table).values(values))


class Transaction(ABC):
    """Statements in one transaction (or, for reads, on one connection, each statement
    on its own). Whoever opens it rolls it back unless `commit()` ran."""

    dialect: str  # the database's dialect name: "postgresql", "sqlite"

    @abstractmethod
    async def commit(self) -> None: ...

    @abstractmethod
    async def fetch(self, statement: Statement, params: Mapping[str, Any]) -> Sequence[Row]: ...

    @abstractmethod
    async def execute_many(
        self, statement: Statement, rows: Sequence[Mapping[str, Any]]
    ) -> None: ...

    async def fetch_one(self, statement: Statement, params: Mapping[str, Any]) -> Row | None:
        rows = await self.fetch(statement, params)
        return rows[0] if rows else None

    async def scalar(self, statement: Statement, params: Mapping[str, Any]) -> Any:
        """The first column of the first row; None without a row."""
        row = await self.fetch_one(statement, params)
        return None if row is None else next(iter(row.values()))

    async def execute(self, statement: Statement, params: Mapping[str, Any]) -> None:
        await self.execute_many(statement, [params])


class DriverTransaction(Transaction):
    """On an asyncpg connection. Integrity errors become SQLAlchemy's IntegrityError,
    as callers catch them on every path."""

    def __init__(self, connection: Any, dialect: Dialect, transaction: Any = None) -> None:
        self._connection = connection
        self._transaction = transaction  # asyncpg's; None: each statement on its own
        self._dialect = dialect
        self.dialect = dialect.name
        self.committed = False

    async def commit(self) -> None:
        if self._transaction is not None:
            await self._transaction.commit()
            self.committed = True

    async def fetch(self, statement: Statement, params: Mapping[str, Any]) -> Sequence[Row]:
        sql, arguments = statement.arguments(self._dialect, params)
        try:
            records = await self._connection.fetch(sql, *arguments)
        except asyncpg.IntegrityConstraintViolationError as error:
            raise sa_exc.IntegrityError(sql, dict(params), error) from error
        return cast(Sequence[Row], records)  # asyncpg Records map names to values

    async def execute_many(self, statement: Statement, rows: Sequence[Mapping[str, Any]]) -> None:
        sql = statement.for_asyncpg(self._dialect)[0]
        arguments = [statement.arguments(self._dialect, row)[1] for row in rows]
        try:
            if len(arguments) == 1:
                await self._connection.execute(sql, *arguments[0])
            else:
                await self._connection.executemany(sql, arguments)
        except asyncpg.IntegrityConstraintViolationError as error:
            raise sa_exc.IntegrityError(sql, list(rows), error) from error


class CoreTransaction(Transaction):
    """On a SQLAlchemy connection: SQLite's path."""

    def __init__(
        self, connection: AsyncConnection, transaction: AsyncTransaction | None = None
    ) -> None:
        self._connection = connection
        self._transaction = transaction  # None: each statement on its own
        self.dialect = connection.dialect.name

    async def commit(self) -> None:
        if self._transaction is not None:
            await self._transaction.commit()

    async def fetch(self, statement: Statement, params: Mapping[str, Any]) -> Sequence[Row]:
        runnable, names = statement.for_core()
        result = await self._connection.execute(runnable, _core_params(names, params))
        return cast(Sequence[Row], result.mappings().all())

    async def execute_many(self, statement: Statement, rows: Sequence[Mapping[str, Any]]) -> None:
        runnable, names = statement.for_core()
        await self._connection.execute(runnable, [_core_params(names, row) for row in rows])


def _core_params(names: Mapping[str, str] | None, params: Mapping[str, Any]) -> dict[str, Any]:
    if names is None:
        return dict(params)
    return {names[name]: value for name, value in params.items() if name in names}
