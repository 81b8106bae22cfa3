"""SQLite's path for the units of work: one writer connection, a few readers beside it,
each statement one hop to its connection's thread.

Through SQLAlchemy's aiosqlite adapter a statement costs a compile-cache lookup, its
result machinery and four hops between the event loop and the connection's thread
(cursor, execute, fetch, close), and one pooled connection served every read and
write in turn: a read waited for every open write transaction. Here, as on
PostgreSQL (services.core.db.statements.DriverTransaction), each statement is
compiled once, and a call runs it, fetches its rows and converts them in one hop;
and WAL mode lets readers run beside the one writer:

- one writer connection, one transaction at a time (an asyncio lock in this
  process). A transaction begins IMMEDIATE: it takes SQLite's write lock at BEGIN,
  waiting there (busy timeout) for a writer of another process, so a transaction
  that read first never fails later on upgrading to a write.
- a few reader connections, read-only (query_only), each statement on its own: it
  sees every transaction committed before it began, never one in progress.

Each connection has a thread of its own that runs its calls one at a time, in the
order they came. A call whose caller is cancelled still runs to its end there, and
what follows on that connection (a rollback, the next caller's BEGIN) runs after it:
no connection is ever left mid-statement or in a transaction for the next caller."""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar, cast

from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ClauseElement

from services.core.db.statements import Row, Statement, Transaction

T = TypeVar("T")

# Reader connections beside the writer. sqlite3 lets go of the GIL while SQLite
# works, so reads run beside the event loop; reads take tens of microseconds, so a
# few are enough, and each holds a page cache of its own.
READERS = 4
# How long a statement waits for another process's write lock (the busy timeout),
# as SQLAlchemy's connections to the same file wait.
BUSY_TIMEOUT = 30.0

Convert = Callable[[Any], Any] | None


def configure(connection: sqlite3.Connection, *, read_only: bool = False) -> None:
    """The settings of every connection to the database. WAL lets readers run beside
    the writer; synchronous NORMAL in WAL loses no committed transaction when the
    process dies (only, at worst, the last ones when the machine loses power)."""
    connection.execute("PRAGMA foreign_keys = ON")
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("PRAGMA synchronous = NORMAL")
    if read_only:
        connection.execute("PRAGMA query_only = ON")


class _Link:
    """One sqlite3 connection, opened and used only by a thread of its own that runs
    the calls given to it one at a time, in order."""

    def __init__(self, path: str, *, read_only: bool, name: str) -> None:
        self._calls: queue.SimpleQueue[Any] = queue.SimpleQueue()
        # A daemon: an unclosed database must not keep the process alive at exit.
        threading.Thread(
            target=_serve, args=(self._calls, path, read_only), name=name, daemon=True
        ).start()

    def submit(self, call: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        """Runs `call(connection)` in the connection's thread after every call given
        before it; its result, or its error, in the future."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._calls.put((call, future, loop))
        return future

    async def run(self, call: Callable[[sqlite3.Connection], T]) -> T:
        return await self.submit(call)

    def close(self) -> None:
        self._calls.put(None)


def _serve(calls: queue.SimpleQueue[Any], path: str, read_only: bool) -> None:
    connection: sqlite3.Connection | None = None
    opening_error: BaseException | None = None
    try:
        # Autocommit (isolation_level None): the driver begins nothing on its own;
        # transactions are this module's BEGIN IMMEDIATE and COMMIT.
        connection = sqlite3.connect(
            path,
            timeout=BUSY_TIMEOUT,
            isolation_level=None,
            uri=path.startswith("file:"),
        )
        configure(connection, read_only=read_only)
    except sqlite3.Error as error:
        opening_error = error
    while (item := calls.get()) is not None:
        call, future, loop = item
        try:
            if connection is None or opening_error is not None:
                raise opening_error or sqlite3.OperationalError("database not open")
            result = call(connection)
        except BaseException as error:  # handed to the caller, whatever it is
            _hand_back(loop, _fail, future, error)
        else:
            _hand_back(loop, _settle, future, result)
    if connection is not None:
        connection.close()


def _hand_back(
    loop: asyncio.AbstractEventLoop,
    deliver: Callable[[asyncio.Future[Any], Any], None],
    future: asyncio.Future[Any],
    outcome: Any,
) -> None:
    """Delivers a call's outcome on its caller's loop, unless that loop is closed: a
    rollback queued by a unit of work that ended as its program did has nobody left
    to tell (and an error raised here would be printed from this thread)."""
    with contextlib.suppress(RuntimeError):  # "Event loop is closed"
        loop.call_soon_threadsafe(deliver, future, outcome)


def _settle(future: asyncio.Future[Any], result: Any) -> None:
    if not future.done():  # a cancelled caller no longer waits
        future.set_result(result)


def _fail(future: asyncio.Future[Any], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)


def is_memory(path: str) -> bool:
    """An in-memory database: each connection would have one of its own."""
    return path in ("", ":memory:") or "mode=memory" in path


class SqliteDatabase:
    """The writer and the readers of one SQLite file, opened on first use."""

    def __init__(self, path: str, dialect: Dialect, *, readers: int = READERS) -> None:
        self._path = path
        self.dialect = dialect
        # An in-memory database has no other connection to read it: the writer does.
        self.readers = 0 if is_memory(path) else readers
        self._writer: _Link | None = None
        self._idle: list[_Link] = []
        self._opened = 0
        self._write_lock = asyncio.Lock()
        self._reader_free = asyncio.Condition()
        self._finalizer: weakref.finalize[[_Link, list[_Link]], SqliteDatabase] | None = None
        self._closed = False

    def _the_writer(self) -> _Link:
        if self._writer is None:
            self._writer = _Link(self._path, read_only=False, name="sqlite writer")
            self._finalizer = weakref.finalize(self, _close_all, self._writer, self._idle)
        return self._writer

    @asynccontextmanager
    async def writing(self, wait: float, *, transaction: bool = True) -> AsyncIterator[Transaction]:
        """The writer, alone, in one IMMEDIATE transaction (rolled back unless
        committed) or, without `transaction`, each statement on its own."""
        link = self._the_writer()
        try:
            async with asyncio.timeout(wait):
                await self._write_lock.acquire()
        except TimeoutError:
            raise sa_exc.TimeoutError(f"no SQLite writer free within {wait:g} s") from None
        try:
            if not transaction:
                yield SqliteTransaction(link, self.dialect)
                return
            statements = SqliteTransaction(link, self.dialect, in_transaction=True)
            began = link.submit(_begin)
            try:
                await began
                yield statements
            finally:
                if not statements.committed:
                    # Queued behind whatever still runs on the connection (a statement
                    # its cancelled caller left): the next writer finds none open.
                    link.submit(_roll_back)
        finally:
            self._write_lock.release()

    @asynccontextmanager
    async def reading(self, wait: float) -> AsyncIterator[Transaction]:
        """A reader, each statement on its own."""
        if not self.readers:
            async with self.writing(wait, transaction=False) as statements:
                yield statements
            return
        self._the_writer()  # opens the file first, with its settings (WAL)
        link = await self._take_reader(wait)
        try:
            yield SqliteTransaction(link, self.dialect)
        finally:
            if self._closed:
                link.close()
            else:
                self._idle.append(link)
                async with self._reader_free:
                    self._reader_free.notify()

    async def _take_reader(self, wait: float) -> _Link:
        if self._idle:
            return self._idle.pop()
        if self._opened < self.readers:
            self._opened += 1
            return _Link(self._path, read_only=True, name="sqlite reader")
        try:
            async with asyncio.timeout(wait), self._reader_free:
                await self._reader_free.wait_for(lambda: bool(self._idle))
        except TimeoutError:
            raise sa_exc.TimeoutError(f"no SQLite reader free within {wait:g} s") from None
        return self._idle.pop()

    def close(self) -> None:
        """Closes the connections (each after the calls given to it)."""
        self._closed = True
        if self._finalizer is not None:
            self._finalizer()


def _close_all(writer: _Link, idle: list[_Link]) -> None:
    writer.close()
    for link in idle:
        link.close()


def _begin(connection: sqlite3.Connection) -> None:
    if connection.in_transaction:  # a rollback that failed: never nest in it
        connection.execute("ROLLBACK")
    connection.execute("BEGIN IMMEDIATE")


def _roll_back(connection: sqlite3.Connection) -> None:
    if connection.in_transaction:
        connection.execute("ROLLBACK")


def _commit(connection: sqlite3.Connection) -> None:
    connection.execute("COMMIT")


class _Compiled:
    """A statement as SQLite runs it: the SQL with ? markers, the parameters in their
    order with the conversion of each (SQLAlchemy's, for the column types), the values
    the statement fixes itself, and the names and conversions of its result columns."""

    def __init__(self, statement: Statement, dialect: Dialect) -> None:
        compiled = cast(
            SQLCompiler, cast(ClauseElement, statement.statement).compile(dialect=dialect)
        )
        self.compiled = compiled
        self.sql = compiled.string
        # IN lists (expanding parameters) are spelled out per call, by SQLAlchemy.
        self.expands = bool(compiled.post_compile_params or compiled.literal_execute_params)
        self.names: tuple[str, ...] = tuple(compiled.positiontup or ())
        binds = compiled.binds
        # SQLAlchemy's own conversions, as its execution applies them (cached per
        # dialect on each type); and the names it reads result rows by.
        converts = {name: bind.type._cached_bind_processor(dialect) for name, bind in binds.items()}
        self.converts: tuple[Convert, ...] = tuple(converts.get(name) for name in self.names)
        self.fixed = {
            name: binds[name].value
            for name in self.names
            if name in binds and not binds[name].required
        }
        columns = compiled._result_columns
        self.columns: tuple[str, ...] = tuple(column.keyname for column in columns)
        self.results: tuple[Convert, ...] = tuple(
            column.type._cached_result_processor(dialect, None) for column in columns
        )

    def arguments(self, params: Mapping[str, Any]) -> tuple[str, list[Any]]:
        if self.expands:
            state = self.compiled.construct_expanded_state(
                {**self.fixed, **params}, escape_names=False
            )
            names = state.positiontup or ()
            processors = state.processors
            values = state.parameters
            return state.statement, [
                _converted(processors.get(name), values[name]) for name in names
            ]
        return self.sql, [
            _converted(convert, params[name] if name in params else self.fixed[name])
            for name, convert in zip(self.names, self.converts, strict=True)
        ]

    def rows(self, cursor: sqlite3.Cursor) -> list[Row]:
        fetched = cursor.fetchall()
        description = cursor.description
        if description is None:
            return []
        if len(description) != len(self.columns):
            # A textual statement: no column types known, the names SQLite gives.
            names = [column[0] for column in description]
            return [dict(zip(names, row, strict=True)) for row in fetched]
        columns, results = self.columns, self.results
        return [
            {
                name: value if convert is None or value is None else convert(value)
                for name, convert, value in zip(columns, results, row, strict=True)
            }
            for row in fetched
        ]


def _converted(convert: Convert, value: Any) -> Any:
    return value if convert is None else convert(value)


class SqliteTransaction(Transaction):
    """Statements on one SQLite connection, each run, fetched and converted in one
    call in its thread. Driver errors become SQLAlchemy's (IntegrityError,
    OperationalError...), as callers catch them on every path."""

    def __init__(self, link: _Link, dialect: Dialect, *, in_transaction: bool = False) -> None:
        self._link = link
        self._dialect = dialect
        self.dialect = dialect.name
        self._in_transaction = in_transaction
        self.committed = False

    def _compiled(self, statement: Statement) -> _Compiled:
        compiled = statement.for_sqlite
        if compiled is None:
            compiled = statement.for_sqlite = _Compiled(statement, self._dialect)
        return cast(_Compiled, compiled)

    async def commit(self) -> None:
        if self._in_transaction:
            await self._link.run(_commit)
            self.committed = True

    async def fetch(self, statement: Statement, params: Mapping[str, Any]) -> Sequence[Row]:
        compiled = self._compiled(statement)
        sql, arguments = compiled.arguments(params)

        def run(connection: sqlite3.Connection) -> list[Row]:
            return compiled.rows(connection.execute(sql, arguments))

        try:
            return await self._link.run(run)
        except sqlite3.Error as error:
            raise _wrapped(sql, params, error) from error

    async def execute_many(self, statement: Statement, rows: Sequence[Mapping[str, Any]]) -> None:
        compiled = self._compiled(statement)
        calls = [compiled.arguments(row) for row in rows]

        def run(connection: sqlite3.Connection) -> None:
            for sql, arguments in calls:
                connection.execute(sql, arguments)

        try:
            await self._link.run(run)
        except sqlite3.Error as error:
            raise _wrapped(calls[0][0] if calls else "", rows, error) from error


def _wrapped(sql: str, params: Any, error: sqlite3.Error) -> sa_exc.DBAPIError:
    """The driver's error as SQLAlchemy would have raised it (its bound values
    hidden: they may be personal data)."""
    return cast(
        sa_exc.DBAPIError,
        sa_exc.DBAPIError.instance(sql, params, error, sqlite3.Error, hide_parameters=True),
    )
