"""What the outbox holds: a store's recorded events read straight from the
outbox_events table, their payloads decoded with the message class their event_type
names (for the tests of tests/e2e/test_event_recording.py and
tests/integration/test_event_recording.py)."""

from __future__ import annotations

from dataclasses import dataclass

# The generated event modules, imported so the default pool knows their messages.
from commerce.customers.v1 import customer_events_pb2  # noqa: F401
from commerce.loyalty.v1 import loyalty_events_pb2  # noqa: F401
from commerce.orders.v1 import order_events_pb2  # noqa: F401
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.message import Message
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.core.db.outbox import OutboxEvent


@dataclass(frozen=True)
class Recorded:
    """One outbox row, its payload decoded."""

    id: int
    event_id: str
    store_id: int
    module: str
    event_type: str
    subject: str
    sequence: int
    raw_payload: bytes
    payload: Message

    @property
    def short_type(self) -> str:
        return self.event_type.rpartition(".")[2]


def decode(event_type: str, payload: bytes) -> Message:
    descriptor = descriptor_pool.Default().FindMessageTypeByName(event_type)
    return message_factory.GetMessageClass(descriptor).FromString(payload)


async def recorded(sessions: async_sessionmaker[AsyncSession], store_id: int) -> list[Recorded]:
    """The store's events in the order they were inserted."""
    async with sessions() as session:
        rows = (
            await session.execute(
                select(OutboxEvent).where(OutboxEvent.store_id == store_id).order_by(OutboxEvent.id)
            )
        ).scalars()
        return [
            Recorded(
                id=row.id,
                event_id=row.event_id,
                store_id=row.store_id,
                module=row.module,
                event_type=row.event_type,
                subject=row.subject,
                sequence=row.sequence,
                raw_payload=row.payload,
                payload=decode(row.event_type, row.payload),
            )
            for row in rows
        ]


class EventLog:
    """A store's outbox, read again after each step: `new()` is what was recorded
    since the last call."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], store_id: int) -> None:
        self._sessions = sessions
        self._store_id = store_id
        self._seen = 0

    async def all(self) -> list[Recorded]:
        return await recorded(self._sessions, self._store_id)

    async def new(self) -> list[Recorded]:
        events = await self.all()
        fresh = events[self._seen :]
        self._seen = len(events)
        return fresh

    async def one(self) -> Recorded:
        """The one event recorded since the last look; fails on none or more."""
        fresh = await self.new()
        assert len(fresh) == 1, [(event.event_type, event.subject) for event in fresh]
        return fresh[0]
