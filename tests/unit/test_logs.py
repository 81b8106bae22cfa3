"""The handler that writes the lines per RPC in batches (services.core.logs), on a
real text stream: what waits, what is written at once, and in which order."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from services.core.logs import ACCESS_LOGGER, BatchingStreamHandler, TextFormatter

NEVER = 3600.0  # seconds: no timed write happens during a test


@pytest.fixture
def written() -> Iterator[tuple[io.StringIO, BatchingStreamHandler]]:
    stream = io.StringIO()
    handler = BatchingStreamHandler(
        stream, batched=frozenset({ACCESS_LOGGER}), interval=NEVER, max_pending=5
    )
    handler.setFormatter(TextFormatter("%(name)s %(message)s"))
    loggers = [logging.getLogger(ACCESS_LOGGER), logging.getLogger("commerce.test")]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    yield stream, handler
    for logger in loggers:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
        logger.propagate = True


def test_lines_per_rpc_wait_and_flush_writes_them_in_order(written):
    stream, handler = written
    access = logging.getLogger(ACCESS_LOGGER)
    for number in range(3):
        access.info("call %d", number)
    assert stream.getvalue() == ""
    handler.flush()
    assert stream.getvalue().splitlines() == [f"{ACCESS_LOGGER} call {n}" for n in range(3)]


def test_any_other_line_writes_those_waiting_first_then_itself_at_once(written):
    stream, _ = written
    access = logging.getLogger(ACCESS_LOGGER)
    access.info("call 1")
    logging.getLogger("commerce.test").info("started")
    access.info("call 2")
    access.warning("refused")  # not a line per RPC: at once
    assert stream.getvalue().splitlines() == [
        f"{ACCESS_LOGGER} call 1",
        "commerce.test started",
        f"{ACCESS_LOGGER} call 2",
        f"{ACCESS_LOGGER} refused",
    ]


def test_a_full_batch_is_written_without_waiting(written):
    stream, _ = written
    access = logging.getLogger(ACCESS_LOGGER)
    for number in range(7):
        access.info("call %d", number)
    assert stream.getvalue().splitlines() == [f"{ACCESS_LOGGER} call {n}" for n in range(5)]
