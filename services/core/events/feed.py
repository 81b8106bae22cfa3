"""The feed: committed events in the order the relay found them.

Rows get their ids as they are inserted, but commit in another order: a reader that
followed ids would skip a row that commits late with a smaller id than one it
already read. So the relay, one at a time, gives each committed row it finds the
next `feed_position`, and every reader (the publisher, EventService) follows feed
positions: a row committed late is found late and placed after what was placed
before it, never skipped. Two changes of one subject commit in order (the second
waits for the first's sequence row lock), so they are placed in that order too."""

from __future__ import annotations

from sqlalchemy import text

from services.core.db.statements import Statement, Transaction

# The oldest unplaced committed rows, up to :batch, numbered from :last + 1 in the
# order of their ids. Both databases read UPDATE ... FROM and window functions.
_PLACE = Statement(
    text(
        "UPDATE outbox_events SET feed_position = placed.position "
        "FROM (SELECT id, :last + row_number() OVER (ORDER BY id) AS position "
        "FROM outbox_events WHERE feed_position IS NULL ORDER BY id LIMIT :batch) AS placed "
        "WHERE outbox_events.id = placed.id "
        "RETURNING outbox_events.feed_position"
    )
)


async def place_events(statements: Transaction, last_position: int, batch: int) -> int:
    """Places up to `batch` committed, unplaced events after `last_position`, in the
    caller's transaction; returns how many. Only the relay holding the lease may
    call it (a second placing the same positions fails on their unique index)."""
    rows = await statements.fetch(_PLACE, {"last": last_position, "batch": batch})
    return len(rows)
