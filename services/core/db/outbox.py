"""The transactional outbox: every change a module makes is recorded as an event in
the same transaction as the change, so no crash can lose an event of a committed
change or leave one of a rolled-back change.

A module describes its change as a `DomainEvent` (a plain dataclass of its own, of
snapshots: its service layer knows no protobuf) and hands it to its unit of work
(`UnitOfWork.record`); when the unit of work commits, it turns each event into the
bytes of its payload message with the encoder the module registered while mounting
(`EventEncoders`) and appends them. Each
event gets the next sequence number of its subject (the resource that changed) from
a counter row that stays locked until the transaction ends: two changes to one
resource get their numbers, and their rows' ids, in the order they commit.

Events are not readable as soon as they commit: ids are handed out as rows are
inserted, not as they commit, so a reader that followed ids would skip a row
committed late with a smaller id. The relay (services.core.events) gives each
committed event its `feed_position`, in the order it finds them, and readers follow
those. This module knows no module, and no protobuf: payloads come as bytes with the full
name of their message."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Protocol

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    bindparam,
    insert,
    select,
    update,
)
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.sql.dml import ReturningInsert

from services.core.db.engine import Base, UtcDateTime, upsert_insert, utc_now
from services.core.db.statements import Row, Statement, Transaction, in_store, one_of

# SQLite only auto-increments a column declared exactly INTEGER PRIMARY KEY.
_EventIdType = BigInteger().with_variant(Integer(), "sqlite")


class OutboxEvent(Base):
    """One recorded event, kept for the feed for the event retention."""

    __tablename__ = "outbox_events"

    # Handed out as rows are inserted: the order of inserts, not of commits.
    id: Mapped[int] = mapped_column(_EventIdType, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(36))
    store_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("stores.id", ondelete="CASCADE"))
    module: Mapped[str] = mapped_column(String(50))
    event_type: Mapped[str] = mapped_column(String(200))
    subject: Mapped[str] = mapped_column(String(200))
    sequence: Mapped[int] = mapped_column(BigInteger)
    occurred_at: Mapped[datetime] = mapped_column(UtcDateTime)
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    # NULL until the relay finds the committed row; then its place in the feed.
    feed_position: Mapped[int | None] = mapped_column(BigInteger)

    __table_args__ = (
        # The relay's next rows to place, in insert order.
        Index(
            "ix_outbox_events_unplaced",
            "id",
            postgresql_where=feed_position.is_(None),
            sqlite_where=feed_position.is_(None),
        ),
        # The feed across stores (publishing, pruning); unique, so two relays that
        # both thought themselves the only one cannot place two events alike.
        Index(
            "ix_outbox_events_feed_position",
            "feed_position",
            unique=True,
            postgresql_where=feed_position.is_not(None),
            sqlite_where=feed_position.is_not(None),
        ),
        # One store's feed (EventService).
        Index(
            "ix_outbox_events_store_feed",
            "store_id",
            "feed_position",
            postgresql_where=feed_position.is_not(None),
            sqlite_where=feed_position.is_not(None),
        ),
    )


class EventSequence(Base):
    """The last sequence number given to an event of one subject of one store."""

    __tablename__ = "event_sequences"

    store_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("stores.id", ondelete="CASCADE"), primary_key=True
    )
    subject: Mapped[str] = mapped_column(String(200), primary_key=True)
    last_sequence: Mapped[int] = mapped_column(BigInteger)


class EventRelayState(Base):
    """Who relays the events now, and how far: one row per relay (`name`)."""

    __tablename__ = "event_relay"

    name: Mapped[str] = mapped_column(String(50), primary_key=True)
    # The process that holds the lease, and until when; another may take it after.
    holder: Mapped[str] = mapped_column(String(200), default="")
    lease_expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    # The last feed position handed out.
    placed_position: Mapped[int] = mapped_column(BigInteger, default=0)
    # The last feed position published (to NATS when configured): pruning never
    # deletes an event past it.
    delivered_position: Mapped[int] = mapped_column(BigInteger, default=0)
    # The last feed position pruned: a cursor before it may have missed events.
    pruned_position: Mapped[int] = mapped_column(BigInteger, default=0)


class DomainEvent:
    """Base of the events modules record: each a frozen dataclass of the module's
    own, carrying what its payload message is built from."""

    # The module that records it: the <module> of its NATS subject.
    module: ClassVar[str]

    @property
    def subject(self) -> str:
        """The resource that changed, relative to its store, such as "orders/42"."""
        raise NotImplementedError


# The full name of an event's payload message and the message's bytes.
EncodedPayload = tuple[str, bytes]
Encoder = Callable[[Any], EncodedPayload]
# A payload's bytes without the personal data it carries (the same bytes when it
# carries none): what EraseCustomer leaves of a past event.
Redactor = Callable[[bytes], bytes]


def keep(payload: bytes) -> bytes:
    """The redactor of a payload that carries no personal data."""
    return payload


class EventEncoders:
    """How each kind of event becomes its payload, and how a recorded payload of each
    type loses its personal data (its redactor), registered by the modules that
    record them while they mount."""

    def __init__(self) -> None:
        self._encoders: dict[type[DomainEvent], Encoder] = {}
        self._redactors: dict[str, Redactor] = {}

    def register(self, kind: type[DomainEvent], encoder: Encoder) -> None:
        self._encoders[kind] = encoder

    def encode(self, event: DomainEvent) -> EncodedPayload:
        encoder = self._encoders.get(type(event))
        if encoder is None:
            raise LookupError(f"no encoder registered for {type(event).__name__}")
        return encoder(event)

    def register_redactor(self, event_type: str, redactor: Redactor) -> None:
        """`event_type`: the payload message's full name, as the outbox keeps it."""
        self._redactors[event_type] = redactor

    def redact(self, event_type: str, payload: bytes) -> bytes:
        """The payload without its personal data. An event type without a redactor
        fails the erasure (and rolls it back) rather than keep what it may carry: a
        module that adds an event registers its redactor too (`keep` for none)."""
        redactor = self._redactors.get(event_type)
        if redactor is None:
            raise LookupError(f"no redactor registered for {event_type}")
        return redactor(payload)


def _next_sequence(dialect: str) -> ReturningInsert[tuple[int]]:
    """The subject's next sequence number, from its counter row (created at 1)."""
    return (
        upsert_insert(dialect, EventSequence)
        .values(store_id=bindparam("store_id"), subject=bindparam("subject"), last_sequence=1)
        .on_conflict_do_update(
            index_elements=[EventSequence.store_id, EventSequence.subject],
            set_={"last_sequence": EventSequence.last_sequence + 1},
        )
        .returning(EventSequence.last_sequence)
    )


# SQLite's append takes the sequence in a statement of its own (_APPEND_NUMBERED
# folds it into PostgreSQL's).
_NEXT_SEQUENCE = Statement(_next_sequence("sqlite"))
_EVENT_COLUMNS = (
    "event_id",
    "store_id",
    "module",
    "event_type",
    "subject",
    "sequence",
    "occurred_at",
    "payload",
)
_APPEND = Statement(insert(OutboxEvent).values({name: bindparam(name) for name in _EVENT_COLUMNS}))


def _append_numbered() -> Statement:
    """PostgreSQL's append in one round trip: the sequence upsert as a CTE whose
    RETURNING feeds the event's INSERT (the counter row stays locked the same way)."""
    numbered = _next_sequence("postgresql").cte("next_sequence")
    table = OutboxEvent.__table__
    values = select(
        *(
            numbered.c.last_sequence
            if name == "sequence"
            else bindparam(name, type_=table.c[name].type)
            for name in _EVENT_COLUMNS
        )
    )
    return Statement(insert(OutboxEvent).from_select(_EVENT_COLUMNS, values).add_cte(numbered))


_APPEND_NUMBERED = _append_numbered()


async def append(
    transaction: Transaction,
    store_id: int,
    events: Sequence[DomainEvent],
    encoders: EventEncoders,
) -> None:
    """Writes `events` of store `store_id` in the caller's transaction (on PostgreSQL
    a trigger then wakes the relay, by NOTIFY, once it commits)."""
    now = utc_now()
    for event in events:
        event_type, payload = encoders.encode(event)
        params: dict[str, Any] = {
            "store_id": store_id,
            "subject": event.subject,
            "event_id": str(uuid.uuid4()),
            "module": event.module,
            "event_type": event_type,
            "occurred_at": now,
            "payload": payload,
        }
        if transaction.dialect == "postgresql":
            await transaction.execute(_APPEND_NUMBERED, params)
            continue
        sequence = await transaction.scalar(_NEXT_SEQUENCE, params)
        await transaction.execute(_APPEND, params | {"sequence": int(sequence)})


# -- erasure: past payloads lose their personal data ------------------------------------------

# How many subjects one statement names (SQLite binds at most 32766 values).
_SUBJECTS_PER_STATEMENT = 500


def _events_of(*conditions: ColumnElement[bool]) -> Statement:
    """The store's events of the module bound as `module` that meet `conditions`, in
    insert order: the order the relay places them in, so a redaction and a relay
    round that both touch a row take their locks in one order."""
    return Statement(
        select(OutboxEvent.id, OutboxEvent.event_type, OutboxEvent.payload)
        .where(*in_store(OutboxEvent, "module"), *conditions)
        .order_by(OutboxEvent.id)
    )


# By subject: a resource's events ("orders/42") and those of the resources under it
# ("customers/7/addresses/%", LIKE with "!" as its escape character).
_EVENTS_OF_SUBJECTS = {
    dialect: _events_of(condition)
    for dialect, condition in one_of(OutboxEvent.__table__.c.subject, "subjects").items()
}
_EVENTS_UNDER = _events_of(OutboxEvent.subject.like(bindparam("pattern"), escape="!"))
_REWRITE_PAYLOAD = Statement(
    update(OutboxEvent).where(*in_store(OutboxEvent, "id")).values(payload=bindparam("payload"))
)


class StoreStatements(Protocol):
    """Statements that get one store's id bound as `store_id`: a UnitOfWork (which
    this module, below it, cannot import)."""

    dialect: str

    async def fetch(self, statement: Statement, params: Mapping[str, Any]) -> Sequence[Row]: ...

    async def execute_many(
        self, statement: Statement, rows: Sequence[Mapping[str, Any]]
    ) -> None: ...


def _like_literal(text: str) -> str:
    return text.replace("!", "!!").replace("%", "!%").replace("_", "!_")


@dataclass(frozen=True)
class Redaction:
    """Which past events an erasure empties: `module`'s events whose subject is one of
    `subjects` or, with `under`, lies below that subject ("customers/7" takes
    "customers/7/addresses/3")."""

    module: str
    subjects: tuple[str, ...] = ()
    under: str = ""


async def redact(
    statements: StoreStatements, encoders: EventEncoders, redactions: Sequence[Redaction]
) -> int:
    """Rewrites, in the caller's unit of work (`statements`), the payloads of the
    events `redactions` select, each through its type's redactor; how many changed.
    The events stay (ids, sequences and feed positions); only their payloads lose
    personal data.

    Every selected row is rewritten in one pass in id order, the order in which the
    relay locks the rows it places (services.core.events.feed): an erasure and a
    relay round that both touch unplaced rows queue rather than deadlock.

    The events' subjects have no index: this reads the store's events of each
    module named (kept for the event retention), which an erasure, rare, affords."""
    rows: dict[int, Row] = {}
    for redaction in redactions:
        subjects, module = redaction.subjects, redaction.module
        for start in range(0, len(subjects), _SUBJECTS_PER_STATEMENT):
            chunk = list(subjects[start : start + _SUBJECTS_PER_STATEMENT])
            params = {"module": module, "subjects": chunk}
            for row in await statements.fetch(_EVENTS_OF_SUBJECTS[statements.dialect], params):
                rows[int(row["id"])] = row
        if redaction.under:
            pattern = _like_literal(redaction.under.rstrip("/")) + "/%"
            for row in await statements.fetch(
                _EVENTS_UNDER, {"module": module, "pattern": pattern}
            ):
                rows[int(row["id"])] = row
    rewritten: list[dict[str, Any]] = []
    for event_id, row in sorted(rows.items()):
        payload = bytes(row["payload"])
        redacted = encoders.redact(row["event_type"], payload)
        if redacted != payload:
            rewritten.append({"id": event_id, "payload": redacted})
    if rewritten:
        await statements.execute_many(_REWRITE_PAYLOAD, rewritten)
    return len(rewritten)
