"""The feed: committed events in the order the relay found them.

Rows get their ids as they are inserted, but commit in another order: a reader that
followed ids would skip a row that commits late with a smaller id than one it
already read. So the relay, one at a time, gives each committed row it finds the
next `feed_position`, and every reader (the publisher, EventService) follows feed
positions: a row committed late is found late and placed after what was placed
before it, never skipped. Two changes of one subject commit in order (the second
waits for the first's sequence row lock), so they are placed in that order too."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import bindparam, text, update

from services.core.db.outbox import EventRelayState
from services.core.db.statements import Statement, Transaction, insert_unless_present
from services.core.events.notifications import FEED_CHANNEL

# The relay's row in event_relay.
RELAY_NAME = "relay"
# Events placed per transaction.
PLACE_BATCH = 1000


def _place(lock: str) -> Statement:
    """The oldest unplaced committed rows, up to :batch, numbered from :last + 1 in
    the order of their ids. Both databases read UPDATE ... FROM and window functions.
    `lock` locks the chosen rows in id order (PostgreSQL): two placers at once (a
    holder that lost its lease and does not know it yet) then queue on the first row
    instead of deadlocking; the second finds them placed, or clashes on a position."""
    return Statement(
        text(
            "UPDATE outbox_events SET feed_position = placed.position "  # noqa: S608 (`lock`: one of two fixed clauses)
            "FROM (SELECT id, :last + row_number() OVER (ORDER BY id) AS position "
            "FROM (SELECT id FROM outbox_events WHERE feed_position IS NULL "
            f"ORDER BY id LIMIT :batch{lock}) AS unplaced) AS placed "
            "WHERE outbox_events.id = placed.id "
            "RETURNING outbox_events.feed_position"
        )
    )


def event_source(store_id: int) -> str:
    """The CloudEvents `source` of a store's events (Event.source, ce-source)."""
    return f"commerce/stores/{store_id}"


# SQLite has one writer at a time: nothing to lock.
_PLACE = {"postgresql": _place(" FOR UPDATE"), "sqlite": _place("")}


async def place_events(statements: Transaction, last_position: int, batch: int) -> int:
    """Places up to `batch` committed, unplaced events after `last_position`, in the
    caller's transaction; returns how many. Only the relay holding the lease may
    call it (a second placing the same positions fails on their unique index)."""
    rows = await statements.fetch(
        _PLACE[statements.dialect], {"last": last_position, "batch": batch}
    )
    return len(rows)


_ENSURE_ROW = insert_unless_present(
    EventRelayState,
    ["name"],
    fixed={
        "holder": "",
        "placed_position": 0,
        "delivered_position": 0,
        "pruned_position": 0,
    },
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SET_PLACED = Statement(
    update(EventRelayState)
    .where(EventRelayState.name == bindparam("relay"))
    .values(placed_position=bindparam("placed"))
)
# Tells every process's event streams that the feed grew (delivered at commit).
_NOTIFY_FEED = Statement(text(f"SELECT pg_notify('{FEED_CHANNEL}', '')"))


async def ensure_relay_row(statements: Transaction, relay: str) -> None:
    """Creates the relay's row, with nothing placed and no holder, unless it exists."""
    await statements.execute(
        _ENSURE_ROW[statements.dialect], {"name": relay, "lease_expires_at": _EPOCH}
    )


async def record_placed(statements: Transaction, relay: str, placed: int) -> None:
    """Records `placed` as the last position handed out and, on PostgreSQL, tells
    every process's event streams at commit that the feed grew. The relay reads its
    positions from its row at the start of every round, so it goes on after (and
    publishes) what another placer recorded here (services.core.events.feed_snapshots)."""
    await statements.execute(_SET_PLACED, {"relay": relay, "placed": placed})
    if statements.dialect == "postgresql":
        await statements.fetch(_NOTIFY_FEED, {})
