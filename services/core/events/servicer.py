"""commerce.events.v1.EventService: a store's change feed over gRPC (ListEvents, and
StreamEvents that then follows new events). Reads the feed through
services.core.events.reader; knows no module: payloads go out as google.protobuf.Any
of the type the outbox recorded."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, TypeAlias

import grpc
from commerce.events.v1 import event_pb2, event_service_pb2, event_service_pb2_grpc
from google.protobuf import any_pb2, timestamp_pb2
from prometheus_client import Counter

from services.core.db.unit_of_work import TenantDatabase
from services.core.domain.errors import InvalidArgument
from services.core.domain.pagination import PageTokenCodec, resolve_page_size
from services.core.events.feed import event_source
from services.core.events.reader import (
    FeedEvent,
    checked_types,
    events_after,
    newest_position,
    parse_cursor,
)
from services.core.events.signals import Signal
from services.core.modules import ModuleContext
from services.core.rpc.interceptor import finished_anyway

Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
# A stream reads the feed this many events at a time, and reads the next page only
# once the caller took every event of this one (grpc.aio asks for the next message
# only once the last was sent, which waits for HTTP/2 flow control): a slow reader
# holds at most one page in the server.
STREAM_PAGE_SIZE = 100

# How far streams read ahead shows here: a caller that stops reading stops its
# stream's reads too.
STREAM_PAGES_READ = Counter(
    "commerce_event_stream_pages_read_total", "Pages of the feed read by StreamEvents calls."
)

STREAM_EVENTS_READ = Counter(
    "commerce_event_stream_events_read_total", "Events read from the feed by StreamEvents calls."
)

SERVICE_NAME = event_service_pb2.DESCRIPTOR.services_by_name["EventService"].full_name


def event_to_proto(event: FeedEvent) -> event_pb2.Event:
    time = timestamp_pb2.Timestamp()
    time.FromDatetime(event.occurred_at)
    return event_pb2.Event(
        id=event.event_id,
        store_id=event.store_id,
        type=event.event_type,
        subject=event.subject,
        sequence=event.sequence,
        time=time,
        payload=any_pb2.Any(
            type_url=f"type.googleapis.com/{event.event_type}", value=event.payload
        ),
        cursor=event.cursor,
        source=event_source(event.store_id),
    )


class EventServicer(event_service_pb2_grpc.EventServiceServicer):
    def __init__(
        self,
        database: TenantDatabase,
        page_tokens: PageTokenCodec,
        events_placed: Signal,
        poll_seconds: float,
    ) -> None:
        self._db = database
        self._page_tokens = page_tokens
        self._events_placed = events_placed
        self._poll_seconds = poll_seconds

    async def _page(
        self, store_id: int, after: int, types: tuple[str, ...], limit: int
    ) -> list[FeedEvent]:
        async def read() -> list[FeedEvent]:
            async with self._db.reading(store_id) as uow:
                return await events_after(uow, after, types, limit)

        # Streams end by cancellation (the caller hangs up, the server drains): their
        # reads finish anyway.
        return await finished_anyway(read())

    async def ListEvents(
        self, request: event_service_pb2.ListEventsRequest, context: Context
    ) -> event_service_pb2.ListEventsResponse:
        after = parse_cursor(request.after_cursor, "after_cursor")
        types = checked_types(request.types)
        size = resolve_page_size(
            request.page_size, default=DEFAULT_PAGE_SIZE, maximum=MAX_PAGE_SIZE
        )
        scope: dict[str, Any] = {
            "list": "events",
            "store_id": request.store_id,
            "after_cursor": request.after_cursor,
            "types": list(types),
        }
        if request.page_token:
            (position,) = self._page_tokens.decode(request.page_token, scope)
            if not isinstance(position, int) or position < after:
                raise InvalidArgument.of("page_token", "is not a page token of this API")
            after = position
        events = await self._page(request.store_id, after, types, size + 1)
        page, token = self._page_tokens.cut(events, size, scope, lambda last: [last.position])
        return event_service_pb2.ListEventsResponse(
            events=[event_to_proto(event) for event in page], next_page_token=token
        )

    async def StreamEvents(
        self, request: event_service_pb2.StreamEventsRequest, context: Context
    ) -> AsyncIterator[event_service_pb2.StreamEventsResponse]:
        after = parse_cursor(request.after_cursor, "after_cursor")
        types = checked_types(request.types)
        store_id = request.store_id
        if request.only_new and not request.after_cursor:

            async def newest() -> int:
                async with self._db.reading(store_id) as uow:
                    return await newest_position(uow)

            after = await finished_anyway(newest())
        first = True
        while True:
            # Marked before the read: an event placed while it runs still wakes the wait.
            mark = self._events_placed.mark()
            page = await self._page(store_id, after, types, STREAM_PAGE_SIZE)
            STREAM_PAGES_READ.inc()
            STREAM_EVENTS_READ.inc(len(page))
            if first:
                # The store is checked and the cursor valid: the caller learns now
                # that its stream is open, not when the first event comes.
                await context.send_initial_metadata(())
                first = False
            for event in page:
                yield event_service_pb2.StreamEventsResponse(event=event_to_proto(event))
                after = event.position
            if len(page) < STREAM_PAGE_SIZE:
                await Signal.wait(mark, self._poll_seconds)


def mount(server: grpc.aio.Server, context: ModuleContext) -> list[str]:
    """Adds EventService to `server`; returns its full name."""
    event_service_pb2_grpc.add_EventServiceServicer_to_server(
        EventServicer(
            context.database,
            context.page_tokens,
            context.events_placed,
            context.settings.event_poll_seconds,
        ),
        server,
    )
    return [SERVICE_NAME]
