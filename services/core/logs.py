"""Logging setup: human-readable text, or one JSON object per line for collectors.
With tracing on, a line written inside a traced call carries its trace and span ids
(`trace_id=... span_id=...` at the end of a text line, `trace_id` and `span_id` keys
of a JSON one)."""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.json import JsonFormatter

# The process id tells the workers of `serve --workers N` apart.
TEXT_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s %(message)s"


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


def configure_logging(level: str, log_format: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
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
