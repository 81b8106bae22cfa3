"""Hot reads without the ORM's per-call cost.

A read that runs on every request of a busy service (GetCustomer, say) needs no
unit of work, no identity map and no transaction. A `ReadQuery` is one fixed Core
SELECT with named parameters. On PostgreSQL it is compiled once and sent through the
pooled connection's own asyncpg driver, which prepares it once per connection and
returns rows with the right Python types already; on SQLite (the embedded default)
it runs through SQLAlchemy Core, whose type processing that database needs. Either
way the rows are read-only mappings from column name to value.

A statement interrupted on the driver (a deadline, a lost connection) may leave the
connection mid-protocol: it is invalidated, never handed to the next caller."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

from sqlalchemy import Select
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

Row = Mapping[str, Any]


class ReadQuery:
    """A SELECT with bindparam()s, compiled for the driver on first use."""

    def __init__(self, statement: Select[Any]) -> None:
        self.statement = statement
        self._compiled: tuple[str, tuple[str, ...]] | None = None

    def _for_asyncpg(self, dialect: Dialect) -> tuple[str, tuple[str, ...]]:
        if self._compiled is None:
            compiled = self.statement.compile(dialect=dialect)
            # asyncpg takes $1, $2...: the compiler numbers them in `positiontup` order.
            self._compiled = (compiled.string, tuple(compiled.positiontup or ()))
        return self._compiled

    async def all(self, connection: AsyncConnection, params: Mapping[str, Any]) -> Sequence[Row]:
        """The rows, on a connection of the engine (SQLite or PostgreSQL)."""
        if connection.dialect.driver == "asyncpg":
            raw = await connection.get_raw_connection()
            try:
                return await self._fetch(raw.driver_connection, connection.dialect, params)
            except BaseException:
                await connection.invalidate()
                raise
        result = await connection.execute(self.statement, dict(params))
        return cast(Sequence[Row], result.mappings().all())

    async def on_pool(self, engine: AsyncEngine, params: Mapping[str, Any]) -> Sequence[Row]:
        """The rows, on a connection taken straight from an asyncpg engine's pool,
        without the SQLAlchemy Connection around it (a tenth of GetCustomer's CPU)."""
        pooled = await engine.raw_connection()
        try:
            return await self._fetch(pooled.driver_connection, engine.dialect, params)
        except BaseException:
            pooled.invalidate()
            raise
        finally:
            pooled.close()

    async def _fetch(
        self, driver: Any, dialect: Dialect, params: Mapping[str, Any]
    ) -> Sequence[Row]:
        sql, names = self._for_asyncpg(dialect)
        records = await driver.fetch(sql, *(params[name] for name in names))
        return cast(Sequence[Row], records)  # asyncpg Records map names to values
