"""The database engine, the declarative base every module's models share, and the
column types they have in common."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import DateTime, MetaData, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Dialect
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.pool import NullPool
from sqlalchemy.types import TypeDecorator

# Deterministic constraint names, so migrations can refer to them on every database.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Base of every model of every module: one metadata, one naming convention."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every database. SQLite keeps no offset, so
    values read back from it are naive; they were written in UTC and are marked so."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime; use datetime.now(UTC)")
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


def utc_now() -> datetime:
    return datetime.now(UTC)


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def upsert_insert(dialect: str, table: type[Base]) -> postgresql.Insert | sqlite.Insert:
    """An INSERT on `table` with ON CONFLICT clauses, in the dialect named
    ("postgresql" or "sqlite"): only those databases' own insert() have them."""
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)


# What stands between the server and PostgreSQL: nothing, or a pooler (PgBouncer) that
# lends a server connection for one transaction at a time.
Pooler = Literal["none", "transaction"]
POOLER_OPTION = "commerce_pooler"


def behind_pooler(engine: AsyncEngine) -> bool:
    """Whether the engine reaches PostgreSQL through a transaction pooler."""
    return engine.get_execution_options().get(POOLER_OPTION) == "transaction"


def create_engine(
    url: str, *, pool_size: int = 10, connect_timeout: float = 10.0, pooler: Pooler = "none"
) -> AsyncEngine:
    """An engine for PostgreSQL (asyncpg) or the embedded SQLite default (aiosqlite).

    hide_parameters: a database error must never carry bound values (password hashes,
    emails) into a log line. `connect_timeout` bounds both opening a connection and
    waiting for a free one, so a lost database fails calls fast.

    On PostgreSQL every execution of a prepared statement is planned for the tables
    as they are then (plan_cache_mode = force_custom_plan). Left to choose, PostgreSQL
    keeps a generic plan per statement and connection once it looks no worse than the
    first few custom ones; made while a store is small, such a plan (a scan of the
    whole store by store_id, or a GetCustomer through the e-mail index) stays in use
    as the store grows, until something analyzes the tables. Planning these short
    statements costs the database a few tens of microseconds each.

    Behind a transaction pooler (`pooler="transaction"`): see _pooled_connect_args."""
    if not is_sqlite(url):
        return create_async_engine(
            url,
            pool_size=pool_size,
            max_overflow=0,
            pool_timeout=connect_timeout,
            pool_recycle=3600,
            connect_args=(
                _pooled_connect_args(connect_timeout)
                if pooler == "transaction"
                else {
                    "timeout": connect_timeout,
                    "server_settings": {"plan_cache_mode": "force_custom_plan"},
                }
            ),
            hide_parameters=True,
            # Read back by behind_pooler(): whoever gets the engine learns it too.
            execution_options={POOLER_OPTION: pooler},
        )
    # The server's units of work do not use this engine's pool on SQLite: they have a
    # writer and readers of their own (services.core.db.sqlite). It serves what goes
    # through SQLAlchemy (migrations, the tests' ORM); one connection keeps those
    # transactions, which SQLAlchemy begins deferred, from upgrading to a write
    # beside each other, which SQLite refuses at once instead of waiting.
    engine = create_async_engine(
        url,
        pool_size=1,
        max_overflow=0,
        pool_timeout=max(connect_timeout, 30),
        connect_args={"timeout": 30},
        hide_parameters=True,
    )
    event.listen(engine.sync_engine, "connect", _configure_sqlite_connection)
    return engine


def _pooled_connect_args(connect_timeout: float) -> dict[str, Any]:
    """asyncpg's arguments behind a pooler that lends each transaction (or statement
    outside one) whichever server connection is free: nothing may be left on a server
    connection for a later one to find.

    - No statement cache (statement_cache_size=0): asyncpg prepares each statement
      unnamed and binds it in the same exchange (its Parse and Describe end with a
      Flush, not a Sync, so the pooler keeps the server connection until the Bind's
      Sync), inside a transaction or not. A cached, named statement would be missing
      on the next server connection, or another process's of the same name found.
    - SQLAlchemy's own statements (health probes, migrations, the tests' ORM) are
      prepared under a unique name each, uncached, in their transaction.
    - No session setting (plan_cache_mode): PgBouncer refuses unknown startup
      parameters, and a SET would stay on one server connection. It is not needed:
      an unnamed statement is planned for its parameters every time."""
    return {
        "timeout": connect_timeout,
        "statement_cache_size": 0,
        "prepared_statement_cache_size": 0,
        "prepared_statement_name_func": _unique_statement_name,
    }


def _unique_statement_name() -> str:
    return f"__commerce_{uuid.uuid4().hex}__"


def create_sqlite_side_engine(url: str | URL) -> AsyncEngine:
    """Connections to the same SQLite database beside the units of work's (their
    writer and readers, services.core.db.sqlite), each opened for one use and closed
    after it: for a read that holds its snapshot (a transaction) open for long, which
    would keep one of the few readers from every other call. In WAL mode such a
    reader blocks no writer."""
    engine = create_async_engine(
        url, poolclass=NullPool, connect_args={"timeout": 30}, hide_parameters=True
    )
    event.listen(engine.sync_engine, "connect", _configure_sqlite_connection)
    return engine


def _configure_sqlite_connection(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.execute("PRAGMA synchronous = NORMAL")
    cursor.close()
