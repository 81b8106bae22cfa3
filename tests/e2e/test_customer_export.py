"""CustomerService.ExportCustomers on a real server with real stubs, on both databases:
the snapshot and its event cursor hand over to the feed without a gap or a double
(with writers running, and with events committed but not yet placed), resuming,
filters, stores kept apart, and a cancelled export releasing its connections."""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc
import pytest
from commerce.customers.v1 import (
    customer_events_pb2,
    customer_pb2,
    customer_service_pb2,
    customer_service_pb2_grpc,
)
from commerce.events.v1 import event_service_pb2, event_service_pb2_grpc
from sqlalchemy import bindparam, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.core.db.statements import Statement
from services.core.domain.etags import revision_named
from services.core.events.feed import place_events
from services.core.events.feed_snapshots import APPLICATION_NAME
from services.server import Application
from tests.conftest import new_store
from tests.e2e.helpers import create_customer
from tests.errors import parse as rpc_error

pb = customer_service_pb2
Code = grpc.StatusCode
Stub = customer_service_pb2_grpc.CustomerServiceStub
DEADLINE = 60.0

_CUSTOMER_EVENTS = {
    "commerce.customers.v1.CustomerCreated": customer_events_pb2.CustomerCreated,
    "commerce.customers.v1.CustomerUpdated": customer_events_pb2.CustomerUpdated,
    "commerce.customers.v1.CustomerStatusChanged": customer_events_pb2.CustomerStatusChanged,
}


async def export(
    stub: Stub, store_id: int, **fields: object
) -> tuple[list[customer_pb2.Customer], str]:
    """Every customer the export sends, and its one cursor (each message has it)."""
    customers: list[customer_pb2.Customer] = []
    cursors = set()
    messages = 0
    async for response in stub.ExportCustomers(
        pb.ExportCustomersRequest(store_id=store_id, **fields), timeout=DEADLINE
    ):
        messages += 1
        customers += response.customers
        cursors.add(response.event_cursor)
    assert messages >= 1, "no first message: the cursor never came"
    assert len(cursors) == 1, cursors
    ids = [customer.customer_id for customer in customers]
    assert ids == sorted(set(ids)), "not in ascending customer_id order, or repeated"
    return customers, cursors.pop()


async def list_customers(stub: Stub, store_id: int) -> list[customer_pb2.Customer]:
    found: list[customer_pb2.Customer] = []
    token = ""
    while True:
        page = await stub.ListCustomers(
            pb.ListCustomersRequest(store_id=store_id, page_size=500, page_token=token)
        )
        found += page.customers
        token = page.next_page_token
        if not token:
            return found


async def events_after(channel: grpc.aio.Channel, store_id: int, cursor: str) -> list:
    stub = event_service_pb2_grpc.EventServiceStub(channel)
    events: list = []
    token = ""
    while True:
        page = await stub.ListEvents(
            event_service_pb2.ListEventsRequest(
                store_id=store_id, after_cursor=cursor, page_size=1000, page_token=token
            )
        )
        events += page.events
        token = page.next_page_token
        if not token:
            return events


def _revision(customer: customer_pb2.Customer) -> int:
    revision = revision_named(customer.etag)
    assert revision is not None, customer.etag
    return revision


def apply_events(snapshot: list[customer_pb2.Customer], events: list) -> dict[int, tuple]:
    """The snapshot brought up to date by the customers' events after its cursor,
    checking on the way that none of them tells a change the snapshot shows."""
    exported = {customer.customer_id: customer for customer in snapshot}
    state = {key: _state(customer) for key, customer in exported.items()}
    for event in events:
        kind = _CUSTOMER_EVENTS.get(event.type)
        if kind is None:
            continue
        payload = kind()
        assert event.payload.Unpack(payload)
        customer = payload.customer
        before = exported.get(customer.customer_id)
        # A double: the snapshot shows this change (or a later one) already.
        assert before is None or _revision(customer) > _revision(before), (
            f"event at {event.cursor} repeats customers/{customer.customer_id} "
            f"{customer.etag}, the snapshot has {before.etag}"
        )
        state[customer.customer_id] = _state(customer)
    return state


def _state(customer: customer_pb2.Customer) -> tuple:
    return (
        customer.etag,
        customer.email,
        customer.first_name,
        customer.last_name,
        customer.status,
        tuple(customer.tags),
    )


_UNPLACED = text(
    "SELECT count(*) FROM outbox_events WHERE store_id = :store_id AND feed_position IS NULL"
)


async def unplaced(sessions: async_sessionmaker[AsyncSession], store_id: int) -> int:
    async with sessions() as session:
        return int((await session.execute(_UNPLACED, {"store_id": store_id})).scalar_one())


async def all_placed(sessions: async_sessionmaker[AsyncSession], store_id: int) -> None:
    async with asyncio.timeout(DEADLINE):
        while await unplaced(sessions, store_id):  # noqa: ASYNC110 (seen only in the database)
            await asyncio.sleep(0.05)  # the relay's work, seen only in the database


@asynccontextmanager
async def writers(stub: Stub, store_id: int, count: int = 4) -> AsyncIterator[list[int]]:
    """`count` callers creating, renaming and (de)activating the store's customers
    until the block ends; yields how many changes they made so far."""
    stop = asyncio.Event()
    made = [0]
    ids: list[int] = []

    async def write(seed: int) -> None:
        chance = random.Random(seed)  # noqa: S311 (a workload, not a secret)
        while not stop.is_set():
            choice = chance.random()
            if choice < 0.4 or not ids:
                ids.append((await create_customer(stub, store_id)).customer_id)
            elif choice < 0.8:
                await stub.UpdateCustomer(
                    pb.UpdateCustomerRequest(
                        store_id=store_id,
                        customer_id=chance.choice(ids),
                        customer=customer_pb2.Customer(first_name=f"n{chance.random():.6f}"),
                    )
                )
            else:
                customer_id = chance.choice(ids)
                current = await stub.GetCustomer(
                    pb.GetCustomerRequest(store_id=store_id, customer_id=customer_id)
                )
                flipped = (
                    customer_pb2.CUSTOMER_STATUS_INACTIVE
                    if current.customer.status == customer_pb2.CUSTOMER_STATUS_ACTIVE
                    else customer_pb2.CUSTOMER_STATUS_ACTIVE
                )
                try:
                    await stub.SetCustomerStatus(
                        pb.SetCustomerStatusRequest(
                            store_id=store_id,
                            customer_id=customer_id,
                            status=flipped,
                            etag=current.customer.etag,
                        )
                    )
                except grpc.aio.AioRpcError as error:
                    # Another writer changed it since the read: fine, go on.
                    if error.code() != Code.ABORTED:
                        raise
            made[0] += 1

    tasks = [asyncio.create_task(write(seed)) for seed in range(count)]
    try:
        yield made
    finally:
        stop.set()
        await asyncio.gather(*tasks)


async def wait_for_changes(made: list[int], at_least: int) -> None:
    async with asyncio.timeout(DEADLINE):
        while made[0] < at_least:  # noqa: ASYNC110 (a counter of the writers)
            await asyncio.sleep(0.01)  # the writers' progress


async def check_handover(
    stub: Stub,
    channel: grpc.aio.Channel,
    sessions: async_sessionmaker[AsyncSession],
    store_id: int,
    snapshot: list[customer_pb2.Customer],
    cursor: str,
) -> None:
    """The snapshot and the events after its cursor make exactly the final state."""
    await all_placed(sessions, store_id)
    final = {
        customer.customer_id: _state(customer) for customer in await list_customers(stub, store_id)
    }
    events = await events_after(channel, store_id, cursor)
    assert apply_events(snapshot, events) == final


# -- the handover ------------------------------------------------------------------


async def test_exports_during_writes_hand_over_to_the_feed_without_gap_or_double(
    server: Application, channel, customers, sessions, store_id
):
    """Writers change the store all along (the relay places their events as they
    come); each export, joined with the events after its cursor, makes the final
    state exactly, and no event after a cursor repeats a change of its snapshot."""
    for _ in range(20):
        await create_customer(customers, store_id)
    exports = []
    async with writers(customers, store_id) as made:
        for round_ in range(4):
            await wait_for_changes(made, 30 * (round_ + 1))
            exports.append(await export(customers, store_id))
    assert len({cursor for _, cursor in exports}) > 1  # the feed moved between them
    for snapshot, cursor in exports:
        await check_handover(customers, channel, sessions, store_id, snapshot, cursor)


@asynccontextmanager
async def relay_held_off(server: Application) -> AsyncIterator[None]:
    """The session server's relay (the only one running) stopped for the block: events
    commit and stay unplaced."""
    relay = server.relay
    assert relay is not None
    await relay.stop()
    try:
        yield
    finally:
        relay.start()


async def test_an_export_places_the_committed_events_the_relay_has_not_placed(
    server: Application, channel, customers, sessions, store_id
):
    """With the relay held off, the store's changes are committed but unplaced: the
    export places them itself, before its cursor, and whatever commits after its
    snapshot comes after the cursor once the relay is back."""
    async with relay_held_off(server):
        first = [await create_customer(customers, store_id) for _ in range(5)]
        for customer in first[:3]:
            await customers.UpdateCustomer(
                pb.UpdateCustomerRequest(
                    store_id=store_id,
                    customer_id=customer.customer_id,
                    customer=customer_pb2.Customer(last_name="Before"),
                )
            )
        assert await unplaced(sessions, store_id) == 8
        snapshot, cursor = await export(customers, store_id)
        assert await unplaced(sessions, store_id) == 0
        assert {c.customer_id for c in snapshot} == {c.customer_id for c in first}
        # The export's placements are the feed's: up to the cursor, every change the
        # snapshot shows; after it, nothing yet.
        before = await events_after(channel, store_id, "")
        assert len(before) == 8
        assert int(before[-1].cursor) <= int(cursor)
        assert await events_after(channel, store_id, cursor) == []
        # Changes committed after the snapshot wait for the relay...
        await customers.UpdateCustomer(
            pb.UpdateCustomerRequest(
                store_id=store_id,
                customer_id=first[0].customer_id,
                customer=customer_pb2.Customer(last_name="After"),
            )
        )
        await create_customer(customers, store_id)
        assert await unplaced(sessions, store_id) == 2
    # ... and come after the cursor.
    await check_handover(customers, channel, sessions, store_id, snapshot, cursor)
    assert len(await events_after(channel, store_id, cursor)) == 2


async def test_exports_during_writes_with_the_relay_held_off(
    server: Application, channel, customers, sessions, store_id
):
    """Every export finds events committed and not placed, and writers commit more
    while it takes its snapshot: each export places exactly those before it, and the
    relay, back, places the rest after every cursor."""
    exports = []
    async with relay_held_off(server), writers(customers, store_id) as made:
        for round_ in range(4):
            await wait_for_changes(made, 25 * (round_ + 1))
            assert await unplaced(sessions, store_id) > 0
            exports.append(await export(customers, store_id))
    for snapshot, cursor in exports:
        await check_handover(customers, channel, sessions, store_id, snapshot, cursor)


async def test_an_export_of_an_empty_store_still_gets_its_cursor(customers, store_id):
    responses = [
        response
        async for response in customers.ExportCustomers(
            pb.ExportCustomersRequest(store_id=store_id), timeout=DEADLINE
        )
    ]
    assert len(responses) == 1
    assert list(responses[0].customers) == []
    # A new store has no events: the cursor is wherever the feed is.
    assert responses[0].event_cursor == "" or responses[0].event_cursor.isdigit()


# -- batches and resuming ----------------------------------------------------------


async def seed_customers(
    sessions: async_sessionmaker[AsyncSession], store_id: int, count: int, *, first: int = 1
) -> None:
    """`count` customers straight into the table (ids first..first+count-1): faster
    than the API for thousands, and none of them has an event."""
    async with sessions() as session:
        sqlite = session.bind.dialect.name == "sqlite"
        rows = (
            "WITH RECURSIVE n(i) AS (SELECT :first UNION ALL SELECT i + 1 FROM n "
            "WHERE i < :last) SELECT i FROM n"
            if sqlite
            else "SELECT generate_series(CAST(:first AS BIGINT), CAST(:last AS BIGINT)) AS i"
        )
        now = "CURRENT_TIMESTAMP"
        await session.execute(
            text(
                "INSERT INTO customers (store_id, customer_id, customer_number, email, "  # noqa: S608
                "email_key, hashed_password, first_name, last_name, phone, "
                "marketing_consent, preferred_language, is_active, revision, created_at, "
                "updated_at, erased_at, tags) "
                f"SELECT :store_id, i, 'C-' || i, 'seed' || i || '@example.com', "
                f"'seed' || i || '@example.com', NULL, 'Seed', 'Customer', '', false, '', "
                f"true, 1, {now}, {now}, NULL, '' FROM ({rows}) AS numbers"
            ),
            {"store_id": store_id, "first": first, "last": first + count - 1},
        )
        await session.commit()


async def test_batches_of_500_each_with_the_cursor_and_resuming_after_any_customer(
    customers, sessions, store_id
):
    await seed_customers(sessions, store_id, 1203)
    sizes = []
    cursors = set()
    async for response in customers.ExportCustomers(
        pb.ExportCustomersRequest(store_id=store_id), timeout=DEADLINE
    ):
        sizes.append(len(response.customers))
        cursors.add(response.event_cursor)
    assert sizes == [500, 500, 203]
    assert len(cursors) == 1
    everyone, _ = await export(customers, store_id)
    assert [c.customer_id for c in everyone] == list(range(1, 1204))
    for after in (0, 1, 499, 500, 501, 1000, 1202, 1203, 5000):
        rest, _ = await export(customers, store_id, after_customer_id=after)
        assert [c.customer_id for c in rest] == list(range(after + 1, 1204)), after


async def test_a_resumed_export_joins_the_first_without_gap_or_double(
    server: Application, channel, customers, sessions, store_id
):
    """The rule docs/api.md gives: follow the feed from the first cursor, and for the
    customers after the resume point skip the events at or before the second cursor."""
    for _ in range(30):
        await create_customer(customers, store_id)
    async with writers(customers, store_id) as made:
        await wait_for_changes(made, 20)
        first, first_cursor = await export(customers, store_id)
        resume_at = first[len(first) // 2].customer_id
        received = [c for c in first if c.customer_id <= resume_at]  # interrupted there
        await wait_for_changes(made, made[0] + 20)
        rest, second_cursor = await export(customers, store_id, after_customer_id=resume_at)
        await wait_for_changes(made, made[0] + 20)
    await all_placed(sessions, store_id)
    assert int(second_cursor or 0) >= int(first_cursor or 0)
    joined = received + rest
    events = [
        event
        for event in await events_after(channel, store_id, first_cursor)
        if not (
            _subject_id(event.subject) > resume_at and int(event.cursor) <= int(second_cursor or 0)
        )
    ]
    final = {c.customer_id: _state(c) for c in await list_customers(customers, store_id)}
    assert apply_events(joined, events) == final


def _subject_id(subject: str) -> int:
    return int(subject.split("/")[1])


# -- filters ------------------------------------------------------------------------


async def _tag(sessions, store_id: int, customer_id: int, tags: list[str]) -> None:
    """Tags written as the tag RPCs write them: customers.tags and customer_tags."""
    async with sessions() as session:
        await session.execute(
            text("UPDATE customers SET tags = :tags WHERE store_id = :s AND customer_id = :c"),
            {"tags": ",".join(sorted(tags)), "s": store_id, "c": customer_id},
        )
        for tag in tags:
            await session.execute(
                text("INSERT INTO customer_tags (store_id, tag, customer_id) VALUES (:s, :t, :c)"),
                {"s": store_id, "t": tag, "c": customer_id},
            )
        await session.commit()


async def _erase(sessions, store_id: int, customer_id: int) -> None:
    async with sessions() as session:
        await session.execute(
            text(
                "UPDATE customers SET erased_at = CURRENT_TIMESTAMP, is_active = :active "
                "WHERE store_id = :s AND customer_id = :c"
            ).bindparams(bindparam("active", value=True)),
            {"s": store_id, "c": customer_id},
        )
        await session.commit()


async def test_status_and_tag_filters(customers, sessions, store_id):
    made = [(await create_customer(customers, store_id)).customer_id for _ in range(8)]
    active, inactive, erased, gold, both = made[0], made[1], made[2], made[3], made[4]
    await customers.SetCustomerStatus(
        pb.SetCustomerStatusRequest(
            store_id=store_id, customer_id=inactive, status=customer_pb2.CUSTOMER_STATUS_INACTIVE
        )
    )
    await customers.SetCustomerStatus(
        pb.SetCustomerStatusRequest(
            store_id=store_id, customer_id=both, status=customer_pb2.CUSTOMER_STATUS_INACTIVE
        )
    )
    await _erase(sessions, store_id, erased)  # erased while active: shows as erased
    await _tag(sessions, store_id, gold, ["vip gold"])
    await _tag(sessions, store_id, both, ["vip gold", "wholesale"])
    await _tag(sessions, store_id, erased, ["vip gold"])

    async def ids(**fields: object) -> list[int]:
        found, _ = await export(customers, store_id, **fields)
        return [customer.customer_id for customer in found]

    status = customer_pb2.CustomerStatus
    assert await ids() == made
    assert await ids(status=status.CUSTOMER_STATUS_UNSPECIFIED) == made
    assert await ids(status=status.CUSTOMER_STATUS_INACTIVE) == [inactive, both]
    assert await ids(status=status.CUSTOMER_STATUS_ERASED) == [erased]
    assert await ids(status=status.CUSTOMER_STATUS_ACTIVE) == [
        c for c in made if c not in (inactive, both, erased)
    ]
    assert active in await ids(status=status.CUSTOMER_STATUS_ACTIVE)
    # The tag as a caller may write it: normalised like the customers' tags.
    assert await ids(tag="  VIP\u3000 Gold ") == [erased, gold, both]
    assert await ids(tag="vip gold", status=status.CUSTOMER_STATUS_INACTIVE) == [both]
    assert await ids(tag="vip gold", status=status.CUSTOMER_STATUS_ACTIVE) == [gold]
    assert await ids(tag="wholesale") == [both]
    assert await ids(tag="vip gold", after_customer_id=gold) == [both]
    assert await ids(tag="nobody has this") == []
    exported, _ = await export(customers, store_id, tag="wholesale")
    assert list(exported[0].tags) == ["vip gold", "wholesale"]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"status": 99}, "status"),
        ({"tag": "a,b"}, "tag"),
        ({"tag": "x" * 65}, "tag"),
        ({"tag": "   "}, "tag"),
        ({"tag": "bad\x01tag"}, "tag"),
        ({"after_customer_id": -1}, "after_customer_id"),
    ],
)
async def test_invalid_filters_are_refused_naming_their_field(customers, store_id, fields, field):
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await export(customers, store_id, **fields)
    failure = rpc_error(raised.value)
    assert failure.code == Code.INVALID_ARGUMENT
    assert failure.violated_fields == {field}


# -- stores --------------------------------------------------------------------------


async def test_an_export_shows_only_its_own_store(customers, sessions, store_id, other_store_id):
    mine = [(await create_customer(customers, store_id)).customer_id for _ in range(3)]
    theirs = [await create_customer(customers, other_store_id) for _ in range(4)]
    await _tag(sessions, store_id, mine[0], ["shared"])
    await _tag(sessions, other_store_id, theirs[0].customer_id, ["shared"])
    exported, _ = await export(customers, store_id)
    assert [(c.store_id, c.customer_id) for c in exported] == [(store_id, i) for i in mine]
    tagged, _ = await export(customers, store_id, tag="shared")
    assert [(c.store_id, c.customer_id) for c in tagged] == [(store_id, mine[0])]
    emails = {c.email for c in theirs}
    assert not emails & {c.email for c in exported}


async def test_unknown_and_inactive_stores(customers, sessions):
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await export(customers, 987_654_321)
    assert raised.value.code() == Code.NOT_FOUND
    inactive = await new_store(sessions, active=False)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await export(customers, inactive)
    assert raised.value.code() == Code.FAILED_PRECONDITION
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await export(customers, 0)
    assert raised.value.code() == Code.INVALID_ARGUMENT


# -- cancellation --------------------------------------------------------------------


def _sqlite_connections() -> int:
    """This process's open aiosqlite connections: each runs a thread of its own
    until it is closed. (Not its file descriptors: SQLite keeps a closed
    connection's open while another connection of the process holds a lock.)"""
    return sum("_connection_worker_thread" in thread.name for thread in threading.enumerate())


_HOLDING_SNAPSHOTS = text(
    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
    "AND application_name = :name"
).bindparams(name=APPLICATION_NAME)


async def _held(backend: str, sessions) -> int:
    """Connections held: SQLite's (the pool's, and the extra one of each snapshot),
    PostgreSQL's holding a snapshot (named so while they do)."""
    if backend == "sqlite":
        return _sqlite_connections()
    async with sessions() as session:
        return int((await session.execute(_HOLDING_SNAPSHOTS)).scalar_one())


async def test_a_cancelled_export_releases_its_connections(
    server: Application, customers, sessions, store_id, backend, settings
):
    # Far more than HTTP/2 lets the server send ahead of a reader that stops.
    await seed_customers(sessions, store_id, 30_000)
    await customers.GetCustomer(pb.GetCustomerRequest(store_id=store_id, customer_id=1))
    idle = await _held(backend, sessions)
    for _ in range(3):
        call = customers.ExportCustomers(
            pb.ExportCustomersRequest(store_id=store_id), timeout=DEADLINE
        )
        first = await call.read()
        assert len(first.customers) == 500
        # Mid-stream: the snapshot is open (the server cannot send the rest yet).
        assert await _held(backend, sessions) == idle + 1
        call.cancel()
        async with asyncio.timeout(DEADLINE):
            while await _held(backend, sessions) != idle:  # noqa: ASYNC110
                await asyncio.sleep(0.02)  # the server noticing the cancellation
    # Every pooled connection still serves: as many calls at once as the pool holds.
    results = await asyncio.gather(
        *(
            customers.GetCustomer(pb.GetCustomerRequest(store_id=store_id, customer_id=1))
            for _ in range(settings.db_pool_size * 2)
        )
    )
    assert all(result.customer.customer_id == 1 for result in results)
    everyone, _ = await export(customers, store_id)
    assert len(everyone) == 30_000


# -- an export meeting a relay mid-round -------------------------------------------

_LOCK_RELAY = text("SELECT placed_position FROM event_relay WHERE name = 'relay' FOR UPDATE")
_RECORD_PLACED = text("UPDATE event_relay SET placed_position = :placed WHERE name = 'relay'")
_WAITING_ON_A_LOCK = text(
    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
    "AND wait_event_type = 'Lock'"
)


async def test_an_export_that_meets_a_placing_relay_starts_again_after_it(
    server: Application, channel, customers, sessions, database, store_id, backend
):
    """A relay holds its row and places events while the export takes its snapshot:
    the export waits, finds on PostgreSQL that its snapshot is older than the
    relay's commit (a serialization failure), and starts again; its cursor then
    covers what the relay placed, and nothing comes twice."""
    if backend != "postgresql":
        pytest.skip("SQLite has one writer at a time: placers queue on its write lock")
    async with relay_held_off(server):
        for _ in range(3):
            await create_customer(customers, store_id)
        async with database.maintenance() as relay:  # plays the relay, mid-round
            last = int((await relay.fetch(Statement(_LOCK_RELAY), {}))[0]["placed_position"])
            exporting = asyncio.create_task(export(customers, store_id))
            async with asyncio.timeout(DEADLINE):
                while not await _someone_waits_on_a_lock(sessions):  # noqa: ASYNC110
                    await asyncio.sleep(0.01)  # the export's first statement, queued
            placed = await place_events(relay, last, 1000)
            assert placed >= 3
            await relay.execute(Statement(_RECORD_PLACED), {"placed": last + placed})
            await relay.commit()
        snapshot, cursor = await exporting
        assert int(cursor) >= last + placed
        assert len(snapshot) == 3
        await create_customer(customers, store_id)
    await check_handover(customers, channel, sessions, store_id, snapshot, cursor)


async def _someone_waits_on_a_lock(sessions) -> bool:
    async with sessions() as session:
        return bool((await session.execute(_WAITING_ON_A_LOCK)).scalar_one())
