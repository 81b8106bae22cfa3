"""Publishes placed events to NATS JetStream as CloudEvents (the NATS protocol
binding, binary mode: the attributes in headers, the payload message as the body).

One connection, which nats-py reconnects forever on its own; the first connection is
made in the background, so a broker that is down at start delays publishing and
nothing else. Publishes are pipelined: a batch is written out at once and its acks
awaited together, one round trip per batch instead of one per event."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import nats
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.api import StorageType, StreamConfig
from nats.js.errors import NotFoundError

from services.core.events.feed import event_source

logger = logging.getLogger(__name__)

# How long a published batch may wait for its acks before the unacked rest is
# sent again (JetStream drops the copies it already stored, by Nats-Msg-Id).
ACK_TIMEOUT = 5.0
# Resends within this window of a stream this server created are stored once.
DUPLICATE_WINDOW_SECONDS = 600.0
# Between attempts to reach the broker or set up the stream.
RETRY_SECONDS = 1.0


def event_subject(prefix: str, event: Mapping[str, Any]) -> str:
    """<prefix>.<store_id>.<module>.<EventName>: EventName is the last segment of
    the payload message's full name."""
    name = str(event["event_type"]).rpartition(".")[2]
    return f"{prefix}.{event['store_id']}.{event['module']}.{name}"


def event_headers(event: Mapping[str, Any]) -> dict[str, str]:
    """The CloudEvents attributes of `event` as NATS headers, and the id JetStream
    deduplicates by."""
    occurred: datetime = event["occurred_at"]  # aware: UtcDateTime marks SQLite's UTC
    return {
        "ce-specversion": "1.0",
        "ce-id": str(event["event_id"]),
        "ce-source": event_source(event["store_id"]),
        "ce-type": str(event["event_type"]),
        "ce-subject": str(event["subject"]),
        "ce-time": occurred.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        # The CloudEvents "sequence" extension: the event's number within its subject.
        "ce-sequence": str(event["sequence"]),
        "Content-Type": "application/protobuf",
        "Nats-Msg-Id": str(event["event_id"]),
    }


class EventPublisher:
    """The relay's way to JetStream. `publish` never raises for a broker that is out
    of reach: it says how many of the events were stored."""

    def __init__(
        self,
        servers: str,
        stream: str,
        subject_prefix: str,
        *,
        on_ready: Callable[[], None] = lambda: None,
        ack_timeout: float = ACK_TIMEOUT,
    ) -> None:
        self.servers = [server.strip() for server in servers.split(",") if server.strip()]
        self.stream = stream
        self.subject_prefix = subject_prefix
        self._on_ready = on_ready
        self.ack_timeout = ack_timeout
        self._client: NatsClient | None = None
        self._jetstream: JetStreamContext | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._stream_ready = False
        self._warned = False
        self._closing = False

    @property
    def ready(self) -> bool:
        """Connected (or reconnecting, with publishes buffered) and the stream exists."""
        return self._stream_ready and self._client is not None and not self._client.is_closed

    def start(self) -> None:
        if self._connecting is None:
            self._connecting = asyncio.create_task(self._connect())

    async def _connect(self) -> None:
        """Connects and sets up the stream, trying until it works: nats-py itself
        then reconnects forever."""
        while self._client is None:
            try:
                self._client = await nats.connect(
                    self.servers,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=RETRY_SECONDS,
                    connect_timeout=2,
                    error_cb=self._error,
                    disconnected_cb=self._disconnected,
                    reconnected_cb=self._reconnected,
                )
            except Exception as error:  # nats-py raises many kinds; try again later
                self._warn(f"NATS {', '.join(self.servers)} unreachable: {error!r}")
                await asyncio.sleep(RETRY_SECONDS)
        self._jetstream = self._client.jetstream(timeout=ACK_TIMEOUT)
        while not self._stream_ready:
            try:
                await self._ensure_stream(self._jetstream)
                self._stream_ready = True
            except Exception as error:  # JetStream not ready yet, or the broker went away
                self._warn(f"cannot set up JetStream stream {self.stream}: {error!r}")
                await asyncio.sleep(RETRY_SECONDS)
        if self._warned:
            logger.info("NATS reachable again: publishing events")
        self._warned = False
        self._on_ready()

    async def _ensure_stream(self, jetstream: JetStreamContext) -> None:
        """Creates the stream when missing; one that exists is left as its operator
        configured it."""
        try:
            await jetstream.stream_info(self.stream)
            return
        except NotFoundError:
            pass
        await jetstream.add_stream(
            StreamConfig(
                name=self.stream,
                subjects=[f"{self.subject_prefix}.>"],
                storage=StorageType.FILE,
                duplicate_window=DUPLICATE_WINDOW_SECONDS,
            )
        )
        logger.info("created JetStream stream %s on %s.>", self.stream, self.subject_prefix)

    def _warn(self, message: str) -> None:
        # Once per outage: a broker that is down for an hour is one line, not thousands.
        if not self._warned:
            logger.warning("%s; events wait in the database", message)
            self._warned = True
        else:
            logger.debug("%s", message)

    async def _error(self, error: Exception) -> None:
        logger.debug("NATS: %r", error)

    async def _disconnected(self) -> None:
        if not self._closing:
            self._warn("NATS connection lost")

    async def _reconnected(self) -> None:
        logger.info("NATS connection back")
        self._warned = False
        self._on_ready()

    async def publish(self, events: Sequence[Mapping[str, Any]]) -> int:
        """Publishes `events` (outbox rows, in feed order) and returns how many of
        them, from the first, JetStream acknowledged: the rest must be sent again."""
        jetstream = self._jetstream
        if not self.ready or jetstream is None or not events:
            return 0
        acks: list[asyncio.Future[Any]] = []
        try:
            for event in events:
                subject = event_subject(self.subject_prefix, event)
                headers = event_headers(event)
                acks.append(
                    await jetstream.publish_async(
                        subject,
                        bytes(event["payload"]),
                        # No stall timeout: with one, nats-py waits for its slot in a
                        # task of its own, so each publish yields and goes out in a
                        # write of its own (a batch never fills the 4,000 slots).
                        wait_stall=None,
                        stream=self.stream,
                        headers=headers,
                    )
                )
        except Exception as error:  # buffer full while disconnected, and the like
            self._warn(f"publishing to NATS failed: {error!r}")
        if acks:
            # nats-py leaves the ack of a refused message (a full stream, say) unresolved:
            # the timeout ends the wait for those too.
            await asyncio.wait(acks, timeout=self.ack_timeout)
        stored = 0
        for ack in acks:
            if not ack.done() or ack.cancelled() or ack.exception() is not None:
                break
            stored += 1
        for ack in acks[stored:]:
            if ack.done() and not ack.cancelled() and ack.exception() is not None:
                self._warn(f"JetStream refused an event: {ack.exception()!r}")
                break
        for ack in acks:
            ack.cancel()  # those still waiting give back their slot; they are resent
        if stored < len(events) and not self._warned:
            self._warn("JetStream did not acknowledge every event")
        return stored

    async def close(self) -> None:
        self._closing = True
        if self._connecting is not None:
            self._connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connecting
        if self._client is not None and not self._client.is_closed:
            with contextlib.suppress(Exception):
                await self._client.close()
