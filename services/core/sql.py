"""The hot paths' statements, run the fastest way each database allows.

The ORM and SQLAlchemy's statement execution cost more CPU than the database work of
a hot call: GetCustomer spent more time building a Customer than reading it, and
CreateOrder's five statements spent more in SQLAlchemy than in asyncpg (profiles and
figures in docs/performance.md). So the calls every store makes all day (GetCustomer,
CreateOrder) use fixed Core statements through a small `Transaction` interface:

- on PostgreSQL, `DriverTransaction` sends each statement, compiled once by
  SQLAlchemy, straight to the pooled asyncpg connection, which prepares it once per
  connection and returns rows with the right Python types;
- on SQLite (the embedded default), `CoreTransaction` runs the same statements
  through SQLAlchemy Core, whose type processing that database needs.

The service code is written once against `Transaction`; rows are read-only mappings
from column name to value. Everything else keeps the ORM, where it costs little."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, cast

import asyncpg
from sqlalchemy import Table, bindparam, insert
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.sql.expression import ClauseElement, Executable

Row = Mapping[str, Any]


class Statement:
    """One fixed Core statement whose values are all bindparam()s."""

    def __init__(self, statement: Executable) -> None:
        self.statement = statement
        self._for_asyncpg: tuple[str, tuple[str, ...], dict[str, Any]] | None = None

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

    def arguments(self, dialect: Dialect, params: Mapping[str, Any]) -> tuple[str, list[Any]]:
        """The SQL text and its positional arguments for asyncpg."""
        sql, names, fixed = self.for_asyncpg(dialect)
        return sql, [params[name] if name in params else fixed[name] for name in names]


def insert_row(table: Table) -> Statement:
    """An INSERT of one row that gives every column (a fixed statement has no
    defaults to fill in)."""
    values: dict[str, Any] = {column.name: bindparam(column.name) for column in table.c}
    return Statement(insert(table).values(values))


class Transaction(ABC):
    """Statements in one transaction (or, for reads, on one connection)."""

    dialect: str  # the database's dialect name: "postgresql", "sqlite"

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

    def __init__(self, connection: Any, dialect: Dialect) -> None:
        self._connection = connection
        self._dialect = dialect
        self.dialect = dialect.name

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
    """On a SQLAlchemy connection: SQLite's path, and any session's connection."""

    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection
        self.dialect = connection.dialect.name

    @classmethod
    async def of(cls, session: AsyncSession) -> CoreTransaction:
        """The statements in the session's own transaction."""
        return cls(await session.connection())

    async def fetch(self, statement: Statement, params: Mapping[str, Any]) -> Sequence[Row]:
        result = await self._connection.execute(statement.statement, dict(params))
        return cast(Sequence[Row], result.mappings().all())

    async def execute_many(self, statement: Statement, rows: Sequence[Mapping[str, Any]]) -> None:
        await self._connection.execute(statement.statement, [dict(row) for row in rows])
