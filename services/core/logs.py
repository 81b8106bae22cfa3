"""Logging setup: human-readable text, or one JSON object per line for collectors.
With tracing on, a line written inside a traced call carries its trace and span ids
(`trace_id=... span_id=...` at the end of a text line, `trace_id` and `span_id` keys
of a JSON one)."""

from __future__ import annotations

import atexit
import logging
import sys
import threading
import time
from typing import TextIO

from pythonjsonlogger.json import JsonFormatter

# The process id tells the workers of `serve --workers N` apart.
TEXT_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s %(message)s"


# The logger of the one line per RPC (services.core.rpc.interceptor).
ACCESS_LOGGER = "commerce.rpc"
# How long a line per RPC may wait to be written with those that follow it.
ACCESS_LOG_FLUSH_SECONDS = 0.1
# Lines kept at most before they are written anyway.
ACCESS_LOG_MAX_PENDING = 1000

QUIET_DRIVER_LOGGERS = ("aiosqlite", "asyncpg", "sqlalchemy.engine", "sqlalchemy.pool")
# uvicorn, serving the HTTP gateway, announces its start and stop at INFO under the
# name "uvicorn.error"; the server's own lines say it. Its warnings and errors stay.
QUIET_SERVER_LOGGERS = ("uvicorn.error",)


class TextFormatter(logging.Formatter):
    """TEXT_FORMAT, and the ids of the trace a line was written in when tracing put
    them on its record (services.core.tracing), before any traceback."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        trace_id = getattr(record, "trace_id", None)
        if trace_id is None:
            return line
        return f"{line} trace_id={trace_id} span_id={getattr(record, 'span_id', '')}"


class BatchingStreamHandler(logging.StreamHandler[TextIO]):
    """A StreamHandler that writes the lines of `batched` loggers at INFO and below
    (the line per RPC) in batches: one write per `interval` instead of one per call.
    On a cheap call that write (a system call per line on stderr) cost more than
    building the line. Every other record first writes the lines waiting before it,
    then itself, at once, so the order of lines is the order of records and a warning
    or an error is never late. Waiting lines are written after `interval` seconds at
    most, when `max_pending` of them wait, and by `flush()`, which the logging module
    calls at exit (and `configure_logging` registers too), so a server that stops,
    SIGTERM included, loses none."""

    def __init__(
        self,
        stream: TextIO,
        *,
        batched: frozenset[str],
        interval: float = ACCESS_LOG_FLUSH_SECONDS,
        max_pending: int = ACCESS_LOG_MAX_PENDING,
    ) -> None:
        super().__init__(stream)
        self._batched = batched
        self._interval = interval
        self._max_pending = max_pending
        self._pending: list[str] = []
        # Set when the first line starts waiting; the writer thread sleeps otherwise.
        self._waiting = threading.Event()
        self._writer: threading.Thread | None = None

    def emit(self, record: logging.LogRecord) -> None:
        # Called with the handler's lock held (Handler.handle).
        try:
            line = self.format(record) + self.terminator
            if record.levelno <= logging.INFO and record.name in self._batched:
                self._pending.append(line)
                if len(self._pending) >= self._max_pending:
                    self._write_pending()
                elif len(self._pending) == 1:
                    self._wake_writer()
                return
            self._pending.append(line)
            self._write_pending()
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]  # created by Handler.__init__
            self._write_pending()

    def _write_pending(self) -> None:
        """Writes the waiting lines; called with the lock held."""
        if self._pending:
            lines, self._pending = "".join(self._pending), []
            self.stream.write(lines)
        if self.stream and hasattr(self.stream, "flush"):
            self.stream.flush()

    def _wake_writer(self) -> None:
        if self._writer is None:
            self._writer = threading.Thread(
                target=self._write_periodically, name="log-writer", daemon=True
            )
            self._writer.start()
        self._waiting.set()

    def _write_periodically(self) -> None:
        while True:
            self._waiting.wait()
            self._waiting.clear()
            # Lines arriving meanwhile join the batch.
            time.sleep(self._interval)
            try:
                self.flush()
            except Exception:  # a closed stream at exit: nothing left to do
                return


def configure_logging(level: str, log_format: str) -> None:
    handler = BatchingStreamHandler(sys.stderr, batched=frozenset({ACCESS_LOGGER}))
    if log_format == "json":
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(process)d %(name)s %(message)s",
                rename_fields={
                    "asctime": "time",
                    "levelname": "level",
                    "process": "pid",
                    "name": "logger",
                },
            )
        )
    else:
        handler.setFormatter(TextFormatter(TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    # The logging module flushes its handlers at exit too, but only those still
    # configured; this one's lines are written whatever replaced it.
    atexit.register(handler.flush)
    # What no line of ours shows, the logging module need not gather for every record
    # (its documentation's "Optimization" section): the caller's source line, thread
    # and multiprocessing names.
    logging._srcfile = None
    logging.logThreads = False
    logging.logMultiprocessing = False
    # Database drivers log each statement, aiosqlite with its bound values (password
    # hashes, emails), at DEBUG; SQLAlchemy logs statements at INFO. Our own levels
    # never switch that on.
    for driver in QUIET_DRIVER_LOGGERS + QUIET_SERVER_LOGGERS:
        logging.getLogger(driver).setLevel(max(logging.WARNING, logging.getLevelName(level)))
