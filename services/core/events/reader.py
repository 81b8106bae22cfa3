"""Reading one store's feed: its placed events after a position, in feed order, a
bounded page at a time. Knows no module and no protobuf: payloads stay bytes.

A cursor is the decimal feed position of an event. Callers are told it is opaque, so
its form may change; only this module reads it."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ARRAY, String, any_, bindparam, func, select

from services.core.db.outbox import EventRelayState, OutboxEvent
from services.core.db.statements import Statement
from services.core.db.unit_of_work import UnitOfWork
from services.core.domain.errors import InvalidArgument, OutOfRange, Violations

# A feed position is a BIGINT.
_MAX_POSITION = 2**63 - 1
_CURSOR = re.compile(r"^[1-9][0-9]{0,18}$")
# A full protobuf message name: dotted identifiers, a package and a name at least.
_TYPE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)+$")
MAX_TYPES = 50
MAX_TYPE_LENGTH = 200  # outbox_events.event_type's width


@dataclass(frozen=True, slots=True)
class FeedEvent:
    """One placed event, as the outbox keeps it."""

    position: int
    event_id: str
    store_id: int
    event_type: str
    subject: str
    sequence: int
    occurred_at: datetime
    payload: bytes

    @property
    def cursor(self) -> str:
        return cursor_of(self.position)


def cursor_of(position: int) -> str:
    return str(position)


def parse_cursor(cursor: str, field: str) -> int:
    """The feed position of `cursor`; 0 (the feed's start) for an empty one."""
    if not cursor:
        return 0
    if not _CURSOR.match(cursor) or int(cursor) > _MAX_POSITION:
        raise InvalidArgument.of(
            field, "is not a cursor of this feed: pass the cursor of an event as it came"
        )
    return int(cursor)


def checked_types(types: Sequence[str], field: str = "types") -> tuple[str, ...]:
    """The distinct event types asked for, sorted (the order means nothing), or every
    problem with them."""
    violations = Violations()
    if len(types) > MAX_TYPES:
        violations.add(field, f"at most {MAX_TYPES} types")
    for index, name in enumerate(types[:MAX_TYPES]):
        if len(name) > MAX_TYPE_LENGTH or not _TYPE.match(name):
            violations.add(
                f"{field}[{index}]",
                "must be the full name of an event message, such as "
                "commerce.orders.v1.OrderCreated",
            )
    violations.raise_if_any()
    return tuple(sorted(set(types)))


_COLUMNS = (
    OutboxEvent.feed_position,
    OutboxEvent.event_id,
    OutboxEvent.store_id,
    OutboxEvent.event_type,
    OutboxEvent.subject,
    OutboxEvent.sequence,
    OutboxEvent.occurred_at,
    OutboxEvent.payload,
)
# The store's placed events after :after, in feed order, through the index on
# (store_id, feed_position).
_AFTER = (
    select(*_COLUMNS)
    .where(
        OutboxEvent.store_id == bindparam("store_id"),
        OutboxEvent.feed_position > bindparam("after"),
    )
    .order_by(OutboxEvent.feed_position)
    .limit(bindparam("limit"))
)
_PAGE = Statement(_AFTER)
# ... of the listed types: an array on PostgreSQL, an IN list on SQLite.
_PAGE_OF_TYPES = {
    "postgresql": Statement(
        _AFTER.where(OutboxEvent.event_type == any_(bindparam("types", type_=ARRAY(String))))
    ),
    "sqlite": Statement(
        _AFTER.where(OutboxEvent.event_type.in_(bindparam("types", expanding=True)))
    ),
}
_NEWEST = Statement(
    select(func.coalesce(func.max(OutboxEvent.feed_position), 0)).where(
        OutboxEvent.store_id == bindparam("store_id"),
        OutboxEvent.feed_position.is_not(None),
    )
)
# Pruning deletes the oldest positions first and records how far it went: a reader
# still before that may have missed events.
_PRUNED = Statement(select(func.coalesce(func.max(EventRelayState.pruned_position), 0)))


async def events_after(
    uow: UnitOfWork, after: int, types: tuple[str, ...], limit: int
) -> list[FeedEvent]:
    """Up to `limit` of the store's placed events after position `after`, oldest
    first; OUT_OF_RANGE (CURSOR_EXPIRED) when pruning passed `after`.

    The pruned position is read after the events: pruning only moves forward, so if
    it has not passed `after` now, it had not when the page was read, and the page
    starts right after `after`."""
    params: dict[str, Any] = {"after": after, "limit": limit}
    if types:
        params["types"] = list(types)
        statement = _PAGE_OF_TYPES[uow.dialect]
    else:
        statement = _PAGE
    rows = await uow.fetch(statement, params)
    if after > 0:
        pruned = int(await uow.scalar(_PRUNED))
        if after < pruned:
            raise OutOfRange(
                "events after this cursor were deleted (they are kept for the event "
                "retention): read again without a cursor, from the oldest event kept",
                reason="CURSOR_EXPIRED",
            )
    return [
        FeedEvent(
            position=row["feed_position"],
            event_id=row["event_id"],
            store_id=row["store_id"],
            event_type=row["event_type"],
            subject=row["subject"],
            sequence=row["sequence"],
            occurred_at=row["occurred_at"],
            payload=bytes(row["payload"]),
        )
        for row in rows
    ]


async def newest_position(uow: UnitOfWork) -> int:
    """The feed position of the store's newest placed event; 0 without one."""
    return int(await uow.scalar(_NEWEST))
