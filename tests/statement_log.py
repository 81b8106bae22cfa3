"""Every SQL text the session's in-process server sends to PostgreSQL, for the check
that each would route to one Citus shard (tests/integration/test_citus_statements.py).

Two taps, because the service talks to PostgreSQL two ways: its fixed statements go
straight to the asyncpg connection (asyncpg's query logger sees them), and the few
that run through SQLAlchemy (a health probe) are prepared by SQLAlchemy's dialect,
which asyncpg's logger does not see (SQLAlchemy's cursor event does). Only the
server's own engine is watched: the harness's engines arrange and inspect data
with statements of their own that the service never sends."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine


class StatementLog:
    """The distinct SQL texts sent on the engines it watches."""

    def __init__(self) -> None:
        self.texts: set[str] = set()
        self._ignoring: ContextVar[bool] = ContextVar("ignoring", default=False)

    @contextmanager
    def ignoring(self) -> Iterator[None]:
        """For a test's own statements sent through the server's engine (a helper
        that places events as the relay would, say): not recorded. The loggers run
        in the context of the task that sent the statement."""
        token = self._ignoring.set(True)
        try:
            yield
        finally:
            self._ignoring.reset(token)

    def watch(self, engine: AsyncEngine) -> None:
        """Records what `engine` sends from now on (before its first connection, so
        that no connection escapes). SQLite is no Citus candidate: ignored."""
        if engine.dialect.name != "postgresql":
            return
        event.listen(engine.sync_engine, "connect", self._on_connect)
        event.listen(engine.sync_engine, "before_cursor_execute", self._on_cursor)

    def _on_connect(self, dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.driver_connection.add_query_logger(self._on_query)

    def _on_query(self, logged: Any) -> None:  # asyncpg.connection.LoggedQuery
        if not self._ignoring.get():
            self.texts.add(logged.query)

    def _on_cursor(self, *arguments: Any) -> None:
        # (connection, cursor, statement, parameters, context, executemany)
        if not self._ignoring.get():
            self.texts.add(arguments[2])


# One per test session: what the session's server sent, across every test module.
SERVER_STATEMENTS = StatementLog()
