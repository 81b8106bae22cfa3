"""The change feed over gRPC (commerce.events.v1.EventService), on a real server with
real stubs: pages and cursors, the type filter, bad and expired cursors, stores kept
apart, and streams that send the backlog, follow new events, end with UNAVAILABLE
when the server stops and read no further ahead than their caller."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import grpc
import pytest
from commerce.events.v1 import event_service_pb2, event_service_pb2_grpc
from commerce.orders.v1 import order_events_pb2, order_service_pb2, order_service_pb2_grpc
from prometheus_client import REGISTRY
from sqlalchemy import bindparam, func, select, update
from sqlalchemy import exc as sa_exc

from services.core.db.outbox import DomainEvent, EventEncoders, EventRelayState, OutboxEvent, append
from services.core.db.statements import Statement
from services.core.events.feed import place_events
from services.core.rpc.callers import new_token, token_digest
from services.core.settings import Settings
from services.server import Application
from tests.e2e.helpers import create_order, line, serving
from tests.errors import parse as rpc_error
from tests.statement_log import SERVER_STATEMENTS

Code = grpc.StatusCode
ORDER_CREATED = "commerce.orders.v1.OrderCreated"
DEADLINE = 30.0

_MAX_POSITION = Statement(select(func.coalesce(func.max(OutboxEvent.feed_position), 0)))
# Locked first, as a relay locks its row before the events it places: the other
# order deadlocks with it.
_RELAYED_POSITIONS = Statement(select(EventRelayState.placed_position).with_for_update())
# A relay of another server on this database (the session's) then goes on after
# what the tests placed, instead of clashing with it.
_RELAYED_UP_TO = Statement(
    update(EventRelayState)
    .where(EventRelayState.placed_position < bindparam("position"))
    .values(placed_position=bindparam("position"), delivered_position=bindparam("position"))
)


async def place_all(app: Application) -> None:
    """Places every committed event, as the relay does, and wakes the streams. Takes
    the positions after the highest one placed or relayed, and records them as
    relayed, so it agrees with any relay on the database; a clash on the unique
    position index (another placed first) is tried again."""
    # The test's own statements through the server's engine: not the service's
    # (tests/e2e/test_citus_statements.py checks those).
    with SERVER_STATEMENTS.ignoring():
        while True:
            try:
                async with app.database.maintenance() as statements:
                    relayed = await statements.fetch(_RELAYED_POSITIONS, {})
                    last = max(
                        [
                            int(await statements.scalar(_MAX_POSITION, {})),
                            *(int(row["placed_position"]) for row in relayed),
                        ]
                    )
                    placed = await place_events(statements, last, 1000)
                    await statements.execute(_RELAYED_UP_TO, {"position": last + placed})
                    await statements.commit()
            except sa_exc.IntegrityError:
                continue
            if placed < 1000:
                break
    app.events_placed.notify()


def _pages_read() -> float:
    return REGISTRY.get_sample_value("commerce_event_stream_pages_read_total") or 0.0


async def _pages_read_above(pages: float) -> None:
    async with asyncio.timeout(DEADLINE):
        while _pages_read() <= pages:  # noqa: ASYNC110 (a counter of the server, no event to wait on)
            await asyncio.sleep(0.01)


@pytest.fixture
async def feed(settings: Settings) -> AsyncIterator[tuple[Application, grpc.aio.Channel]]:
    """A server of its own that relays nothing: the tests place events themselves."""
    async with serving(settings.model_copy(update={"event_relay": False})) as served:
        yield served


async def new_orders(channel: grpc.aio.Channel, store_id: int, count: int) -> list[int]:
    stub = order_service_pb2_grpc.OrderServiceStub(channel)
    return [(await create_order(stub, store_id)).order_id for _ in range(count)]


def events_stub(channel: grpc.aio.Channel) -> event_service_pb2_grpc.EventServiceStub:
    return event_service_pb2_grpc.EventServiceStub(channel)


async def list_all(stub, store_id: int, **fields) -> list:
    events, token = [], ""
    while True:
        page = await stub.ListEvents(
            event_service_pb2.ListEventsRequest(store_id=store_id, page_token=token, **fields)
        )
        events += page.events
        token = page.next_page_token
        if not token:
            return events


async def test_pages_and_cursors_read_each_event_once_in_order(feed, store_id):
    app, channel = feed
    stub = events_stub(channel)
    first = await new_orders(channel, store_id, 5)
    await place_all(app)
    page = await stub.ListEvents(
        event_service_pb2.ListEventsRequest(store_id=store_id, page_size=2)
    )
    assert [e.subject for e in page.events] == [f"orders/{i}" for i in first[:2]]
    assert page.next_page_token
    seen = await list_all(stub, store_id, page_size=2)
    assert [e.subject for e in seen] == [f"orders/{i}" for i in first]
    event = seen[0]
    assert event.type == ORDER_CREATED
    assert event.store_id == store_id
    assert event.source == f"commerce/stores/{store_id}"
    assert event.sequence == 1
    assert event.time.seconds > 0
    assert event.payload.type_url == f"type.googleapis.com/{ORDER_CREATED}"
    created = order_events_pb2.OrderCreated()
    assert event.payload.Unpack(created)
    assert created.order.order_id == first[0]
    assert len({e.id for e in seen}) == 5

    later = await new_orders(channel, store_id, 3)
    await place_all(app)
    resumed = await list_all(stub, store_id, after_cursor=seen[-1].cursor, page_size=2)
    assert [e.subject for e in resumed] == [f"orders/{i}" for i in later]
    middle = await list_all(stub, store_id, after_cursor=seen[2].cursor)
    assert [e.subject for e in middle] == [f"orders/{i}" for i in first[3:] + later]


async def test_a_page_token_belongs_to_its_request(feed, store_id):
    app, channel = feed
    stub = events_stub(channel)
    await new_orders(channel, store_id, 3)
    await place_all(app)
    page = await stub.ListEvents(
        event_service_pb2.ListEventsRequest(store_id=store_id, page_size=1)
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ListEvents(
            event_service_pb2.ListEventsRequest(
                store_id=store_id,
                page_size=1,
                page_token=page.next_page_token,
                types=[ORDER_CREATED],
            )
        )
    assert caught.value.code() == Code.INVALID_ARGUMENT


async def test_the_type_filter_keeps_only_the_types_asked_for(feed, store_id):
    app, channel = feed
    stub = events_stub(channel)
    await new_orders(channel, store_id, 2)
    await place_all(app)
    kept = await list_all(stub, store_id, types=[ORDER_CREATED])
    assert len(kept) == 2
    assert await list_all(stub, store_id, types=["commerce.orders.v1.OrderStatusChanged"]) == []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ListEvents(
            event_service_pb2.ListEventsRequest(store_id=store_id, types=["OrderCreated", "a b"])
        )
    error = rpc_error(caught.value)
    assert error.code == Code.INVALID_ARGUMENT
    assert [v.field for v in error.bad_request.field_violations] == ["types[0]", "types[1]"]


@pytest.mark.parametrize("cursor", ["abc", "-1", "0", "01", "99999999999999999999", "1.5"])
async def test_a_bad_cursor_is_invalid_argument_on_both_rpcs(feed, store_id, cursor):
    _, channel = feed
    stub = events_stub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ListEvents(
            event_service_pb2.ListEventsRequest(store_id=store_id, after_cursor=cursor)
        )
    error = rpc_error(caught.value)
    assert error.code == Code.INVALID_ARGUMENT
    assert [v.field for v in error.bad_request.field_violations] == ["after_cursor"]
    stream = stub.StreamEvents(
        event_service_pb2.StreamEventsRequest(store_id=store_id, after_cursor=cursor)
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stream.read()
    assert caught.value.code() == Code.INVALID_ARGUMENT


_PRUNED_TO = Statement(
    update(EventRelayState).values(pruned_position=EventRelayState.pruned_position)
)


async def test_a_cursor_before_the_pruned_position_is_expired(feed, store_id):
    app, channel = feed
    stub = events_stub(channel)
    await new_orders(channel, store_id, 3)
    await place_all(app)
    events = await list_all(stub, store_id)
    first, last = int(events[0].cursor), int(events[-1].cursor)
    async with app.database.maintenance() as statements:
        # As pruning records it: everything up to the second event is gone.
        await statements.execute(
            Statement(
                EventRelayState.__table__.delete().where(EventRelayState.name == "feed-test")
            ),
            {},
        )
        await statements.execute(
            Statement(
                EventRelayState.__table__.insert().values(
                    name="feed-test",
                    holder="",
                    lease_expires_at=func.now(),
                    placed_position=last,
                    delivered_position=last,
                    pruned_position=int(events[1].cursor),
                )
            ),
            {},
        )
        await statements.commit()
    try:
        for call in (
            stub.ListEvents(
                event_service_pb2.ListEventsRequest(store_id=store_id, after_cursor=str(first))
            ),
            stub.StreamEvents(
                event_service_pb2.StreamEventsRequest(store_id=store_id, after_cursor=str(first))
            ).read(),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call
            error = rpc_error(caught.value)
            assert error.code == Code.OUT_OF_RANGE
            assert error.error_info.reason == "CURSOR_EXPIRED"
        # From the pruned position on, nothing was missed.
        kept = await list_all(stub, store_id, after_cursor=events[1].cursor)
        assert [e.id for e in kept] == [events[2].id]
    finally:
        async with app.database.maintenance() as statements:
            await statements.execute(
                Statement(
                    EventRelayState.__table__.delete().where(EventRelayState.name == "feed-test")
                ),
                {},
            )
            await statements.commit()


async def test_one_store_never_sees_anothers_events(feed, store_id, other_store_id):
    app, channel = feed
    stub = events_stub(channel)
    mine = await new_orders(channel, store_id, 2)
    await new_orders(channel, other_store_id, 3)
    await place_all(app)
    seen = await list_all(stub, store_id)
    assert [e.subject for e in seen] == [f"orders/{i}" for i in mine]
    assert {e.store_id for e in seen} == {store_id}
    # Another store's cursor in this store skips nothing of this one's either.
    theirs = await list_all(stub, other_store_id)
    assert len(theirs) == 3
    stream = stub.StreamEvents(event_service_pb2.StreamEventsRequest(store_id=store_id))
    got = [(await stream.read()).event for _ in range(2)]
    assert [e.subject for e in got] == [f"orders/{i}" for i in mine]
    stream.cancel()


async def test_unknown_and_inactive_stores_are_refused_on_both_rpcs(feed, sessions):
    from tests.conftest import new_store

    _, channel = feed
    stub = events_stub(channel)
    inactive = await new_store(sessions, active=False)
    for store, code in ((987654321, Code.NOT_FOUND), (inactive, Code.FAILED_PRECONDITION)):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ListEvents(event_service_pb2.ListEventsRequest(store_id=store))
        assert caught.value.code() == code
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.StreamEvents(event_service_pb2.StreamEventsRequest(store_id=store)).read()
        assert caught.value.code() == code


async def test_a_caller_token_needs_events_read_on_both_rpcs(settings, tmp_path: Path, store_id):
    reader, writer = new_token(), new_token()
    callers = tmp_path / "callers"
    callers.write_text(
        f"feed {token_digest(reader)} events:read\norders {token_digest(writer)} orders:write\n"
    )
    guarded = settings.model_copy(update={"caller_tokens_file": str(callers), "event_relay": False})
    async with serving(guarded) as (app, channel):
        stub = events_stub(channel)

        def auth(token: str) -> list[tuple[str, str]]:
            return [("authorization", f"Bearer {token}")]

        orders = order_service_pb2_grpc.OrderServiceStub(channel)
        await orders.CreateOrder(
            order_service_pb2.CreateOrderRequest(
                store_id=store_id, currency_code="EUR", line_items=[line()]
            ),
            metadata=auth(writer),
        )
        await place_all(app)
        listed = await stub.ListEvents(
            event_service_pb2.ListEventsRequest(store_id=store_id), metadata=auth(reader)
        )
        assert len(listed.events) == 1
        stream = stub.StreamEvents(
            event_service_pb2.StreamEventsRequest(store_id=store_id),
            metadata=auth(reader),
            timeout=DEADLINE,
        )
        assert (await stream.read()).event.id == listed.events[0].id
        stream.cancel()
        for call in (
            stub.ListEvents(
                event_service_pb2.ListEventsRequest(store_id=store_id), metadata=auth(writer)
            ),
            stub.StreamEvents(
                event_service_pb2.StreamEventsRequest(store_id=store_id), metadata=auth(writer)
            ).read(),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call
            error = rpc_error(caught.value)
            assert error.code == Code.PERMISSION_DENIED
            assert error.error_info.metadata["needed_scope"] == "events:read"


async def test_a_stream_sends_the_backlog_then_follows_new_events(feed, store_id):
    app, channel = feed
    stub = events_stub(channel)
    before = await new_orders(channel, store_id, 2)
    await place_all(app)
    stream = stub.StreamEvents(
        event_service_pb2.StreamEventsRequest(store_id=store_id), timeout=DEADLINE
    )
    backlog = [(await stream.read()).event for _ in range(2)]
    assert [e.subject for e in backlog] == [f"orders/{i}" for i in before]
    after = await new_orders(channel, store_id, 1)
    await place_all(app)
    followed = (await stream.read()).event
    assert followed.subject == f"orders/{after[0]}"
    assert int(followed.cursor) > int(backlog[-1].cursor)
    stream.cancel()


async def test_only_new_skips_the_backlog(feed, store_id):
    app, channel = feed
    stub = events_stub(channel)
    await new_orders(channel, store_id, 2)
    await place_all(app)
    pages = _pages_read()
    stream = stub.StreamEvents(
        event_service_pb2.StreamEventsRequest(store_id=store_id, only_new=True),
        timeout=DEADLINE,
    )
    # The call has begun once it read its first page (after the newest position).
    await _pages_read_above(pages)
    fresh = await new_orders(channel, store_id, 1)
    await place_all(app)
    event = (await stream.read()).event
    # only_new starts at the newest event when the call began, so what came later comes.
    assert event.subject == f"orders/{fresh[0]}"
    stream.cancel()


async def test_a_stream_ends_unavailable_when_the_server_stops(settings, store_id):
    app = Application(settings.model_copy(update={"event_relay": False}))
    port = await app.start("127.0.0.1:0")
    stopped = False
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await new_orders(channel, store_id, 1)
            await place_all(app)
            stub = events_stub(channel)
            stream = stub.StreamEvents(
                event_service_pb2.StreamEventsRequest(store_id=store_id), timeout=DEADLINE
            )
            last = (await stream.read()).event
            stopping = asyncio.create_task(app.stop(grace=DEADLINE))
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stream.read()
            error = rpc_error(caught.value)
            assert error.code == Code.UNAVAILABLE
            assert "cursor" in error.message
            # A call made while the drain lasts is refused the same way, as a stream.
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.StreamEvents(
                    event_service_pb2.StreamEventsRequest(
                        store_id=store_id, after_cursor=last.cursor
                    )
                ).read()
            assert refused.value.code() == Code.UNAVAILABLE
            await stopping
            stopped = True
    finally:
        if not stopped:
            await app.stop(grace=0)


@dataclass(frozen=True)
class Blob(DomainEvent):
    """A large event of the test's own, to fill flow control windows quickly."""

    module: ClassVar[str] = "tests"
    number: int

    @property
    def subject(self) -> str:
        return f"blobs/{self.number}"


BLOB_BYTES = 16_000


async def test_a_slow_reader_keeps_the_stream_from_reading_ahead(feed, store_id):
    app, channel = feed
    encoders = EventEncoders()
    encoders.register(Blob, lambda blob: ("tests.v1.Blob", bytes(BLOB_BYTES)))
    total = 2000  # 32 MB of payloads, 20 pages of the stream
    async with app.database.maintenance() as statements:
        await append(statements, store_id, [Blob(n) for n in range(total)], encoders)
        await statements.commit()
    await place_all(app)
    events_read = REGISTRY.get_sample_value("commerce_event_stream_events_read_total") or 0.0
    stream = events_stub(channel).StreamEvents(
        event_service_pb2.StreamEventsRequest(store_id=store_id), timeout=DEADLINE
    )
    await stream.read()
    # The caller now reads nothing: the server fills the flow control windows, then
    # waits. Wait until its page reads stop moving.
    read = 0.0
    loop = asyncio.get_running_loop()
    steady_since = loop.time()
    while loop.time() - steady_since < 1.0:
        now = (
            REGISTRY.get_sample_value("commerce_event_stream_events_read_total") or 0.0
        ) - events_read
        if now != read:
            read, steady_since = now, loop.time()
        await asyncio.sleep(0.05)
    print(f"events read ahead of a reader that stopped: {read:.0f} of {total}")
    assert read < total / 2  # far from the whole backlog
    received = 1
    while received < total:
        await stream.read()
        received += 1
    stream.cancel()
    assert received == total


async def _curl(*arguments: str) -> bytes:
    process = await asyncio.create_subprocess_exec(
        "curl", "-sS", "--max-time", "60", *arguments, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await process.communicate()
    return out


async def test_rest_and_connect_list_events_and_rest_streams_them(settings, store_id):
    served = settings.model_copy(
        update={"event_relay": False, "http_listen_address": "127.0.0.1:0"}
    )
    async with serving(served) as (app, channel):
        ids = await new_orders(channel, store_id, 2)
        await place_all(app)
        base = f"http://127.0.0.1:{app.http_port}"
        body = json.loads(await _curl(f"{base}/v1/stores/{store_id}/events?pageSize=1"))
        assert body["events"][0]["subject"] == f"orders/{ids[0]}"
        assert body["events"][0]["payload"]["@type"].endswith(ORDER_CREATED)
        assert body["events"][0]["payload"]["order"]["orderId"] == str(ids[0])
        connect = json.loads(
            await _curl(
                "-X",
                "POST",
                "-H",
                "content-type: application/json",
                "-d",
                json.dumps({"storeId": str(store_id)}),
                f"{base}/commerce.events.v1.EventService/ListEvents",
            )
        )
        assert [e["subject"] for e in connect["events"]] == [f"orders/{i}" for i in ids]
        # The stream never ends by itself: read two lines, then hang up.
        process = await asyncio.create_subprocess_exec(
            "curl",
            "-sSN",
            "--max-time",
            "60",
            f"{base}/v1/stores/{store_id}/events:stream",
            stdout=asyncio.subprocess.PIPE,
        )
        assert process.stdout is not None
        try:
            lines = [json.loads(await process.stdout.readline()) for _ in range(2)]
        finally:
            process.kill()
            await process.wait()
        assert [line["event"]["subject"] for line in lines] == [f"orders/{i}" for i in ids]
        code = await _curl(
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            f"{base}/v1/stores/{store_id}/events:stream?afterCursor=x",
        )
        assert code == b"400"
