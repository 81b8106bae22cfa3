"""The event relay against the real NATS server (JetStream) on 127.0.0.1:4222: every
test publishes to a stream and subject prefix of its own, deleted afterwards.

The relay's lease and positions are one row per database, so these tests get a
database of their own (per backend), where no other test's server relays."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import asyncpg
import nats
import pytest
from commerce.orders.v1 import order_events_pb2, order_service_pb2_grpc
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, StreamConfig
from nats.js.errors import NotFoundError
from sqlalchemy import select, text, update
from sqlalchemy.engine import make_url

from services.core.db.engine import create_engine
from services.core.db.outbox import (
    DomainEvent,
    EventEncoders,
    EventRelayState,
    OutboxEvent,
    append,
)
from services.core.db.stores import create_store
from services.core.db.unit_of_work import TenantDatabase
from services.core.events.notifications import FEED_CHANNEL, DatabaseNotifications
from services.core.events.publisher import EventPublisher
from services.core.events.relay import EventRelay
from services.core.events.signals import Signal
from services.core.settings import Settings
from services.migrations import upgrade
from tests.conftest import BACKENDS, NODE_CLIENT, POSTGRES_URL, TEST_BCRYPT_ROUNDS
from tests.e2e.helpers import create_order, serving
from tests.process import COMMERCE, ROOT, clean_environment, free_port

NATS_URL = "nats://127.0.0.1:4222"
NATS_SERVER = "/usr/sbin/nats-server"


@dataclass(frozen=True)
class Noted(DomainEvent):
    """An event of the tests' own: its payload is its key's bytes."""

    module: ClassVar[str] = "tests"
    key: str
    thing: str = "1"

    @property
    def subject(self) -> str:
        return f"things/{self.thing}"


def encoders() -> EventEncoders:
    registry = EventEncoders()
    registry.register(Noted, lambda event: ("commerce.tests.v1.Noted", event.key.encode()))
    return registry


async def _admin(sql: str) -> None:
    dsn = make_url(POSTGRES_URL).set(drivername="postgresql").render_as_string(False)
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


@pytest.fixture(scope="module", params=BACKENDS)
def relay_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A migrated database of this module's own, per backend."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('relay') / 'commerce.db'}"
        upgrade(url)
        yield url
        return
    name = f"commerce_relay_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    url = make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    try:
        upgrade(url)
        yield url
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def is_postgresql(relay_url: str) -> bool:
    return relay_url.startswith("postgresql")


@pytest.fixture
async def db(relay_url: str) -> AsyncIterator[TenantDatabase]:
    database = TenantDatabase(create_engine(relay_url, pool_size=4))
    database.event_encoders = encoders()
    yield database
    await database.engine.dispose()


@pytest.fixture
async def store(db: TenantDatabase) -> int:
    async with db.maintenance() as statements:
        created = await create_store(statements, f"relay {uuid.uuid4().hex[:8]}")
        await statements.commit()
    return created.id


@pytest.fixture
async def stream() -> AsyncIterator[tuple[str, str]]:
    """A stream name and subject prefix of this test's own; the stream is deleted after."""
    tag = uuid.uuid4().hex[:10]
    name, prefix = f"TEST_{tag}", f"t{tag}.events"
    yield name, prefix
    client = await nats.connect(NATS_URL)
    with contextlib.suppress(NotFoundError):
        await client.jetstream().delete_stream(name)
    await client.close()


@pytest.fixture
async def jetstream() -> AsyncIterator[JetStreamContext]:
    client = await nats.connect(NATS_URL)
    yield client.jetstream()
    await client.close()


def relay_settings(url: str, stream: tuple[str, str] | None, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": url,
        "bcrypt_rounds": TEST_BCRYPT_ROUNDS,
        "page_token_secret": "test",
        "listen_address": "127.0.0.1:0",
        "db_pool_size": 4,
        "event_poll_seconds": 0.2,
        "event_relay_lease_seconds": 2.0,
    }
    if stream is not None:
        values |= {"nats_url": NATS_URL, "nats_stream": stream[0], "nats_subject_prefix": stream[1]}
    return Settings(**(values | overrides))


def new_relay(
    db: TenantDatabase, settings: Settings, committed: Signal | None = None
) -> EventRelay:
    return EventRelay(db, settings, events_committed=committed or Signal(), events_placed=Signal())


async def write(db: TenantDatabase, store_id: int, *keys: str, thing: str = "1") -> None:
    async with db.writing(store_id) as uow:
        for key in keys:
            uow.record(Noted(key, thing))
        await uow.commit()


async def eventually(
    check: Callable[[], Any], seconds: float = 30.0, what: str = "condition"
) -> Any:
    """Polls `check` until it returns something truthy, within `seconds`."""
    async with asyncio.timeout(seconds):
        while True:
            result = check()
            if inspect.isawaitable(result):
                result = await result
            if result:
                break
            await asyncio.sleep(0.05)
    assert result, what
    return result


async def stored(jetstream: JetStreamContext, name: str) -> int:
    try:
        return (await jetstream.stream_info(name)).state.messages
    except NotFoundError:
        return 0


async def has(jetstream: JetStreamContext, stream: tuple[str, str], store: int, count: int) -> bool:
    """Whether the stream holds `count` events of `store` (others may be there too:
    a relay publishes every event it has not delivered, earlier tests' included)."""
    return len(await messages(jetstream, stream, store)) == count


async def messages(jetstream: JetStreamContext, stream: tuple[str, str], store: int) -> list[Any]:
    """The stream's messages of `store`'s events, in stream order."""
    try:
        info = await jetstream.stream_info(stream[0])
    except NotFoundError:
        return []
    if not info.state.messages:
        return []
    found = [
        await jetstream.get_msg(stream[0], seq)
        for seq in range(info.state.first_seq, info.state.last_seq + 1)
    ]
    return [m for m in found if m.subject.startswith(f"{stream[1]}.{store}.")]


async def relay_row(db: TenantDatabase) -> dict[str, Any]:
    async with db.engine.connect() as connection:
        row = (await connection.execute(text("SELECT * FROM event_relay"))).mappings().one()
    return dict(row)


async def test_orders_reach_jetstream_as_cloud_events(relay_url, stream, jetstream):
    settings = relay_settings(relay_url, stream)
    async with serving(settings, ["orders"]) as (app, channel):
        async with app.database.maintenance() as statements:
            store_id = (await create_store(statements, "cloud events")).id
            await statements.commit()
        placed = app.events_placed.mark()
        order = await create_order(order_service_pb2_grpc.OrderServiceStub(channel), store_id)
        await eventually(lambda: has(jetstream, stream, store_id, 1), what="the event")
        assert await Signal.wait(placed, 0)  # the relay told the streams
    [message] = await messages(jetstream, stream, store_id)
    headers = message.headers
    assert message.subject == f"{stream[1]}.{store_id}.orders.OrderCreated"
    uuid.UUID(headers["ce-id"])
    assert headers["Nats-Msg-Id"] == headers["ce-id"]
    assert headers["ce-specversion"] == "1.0"
    assert headers["ce-source"] == f"commerce/stores/{store_id}"
    assert headers["ce-type"] == "commerce.orders.v1.OrderCreated"
    assert headers["ce-subject"] == f"orders/{order.order_id}"
    assert headers["ce-sequence"] == "1"
    assert headers["Content-Type"] == "application/protobuf"
    occurred = datetime.fromisoformat(headers["ce-time"])
    assert headers["ce-time"].endswith("Z")
    assert abs(datetime.now(UTC) - occurred) < timedelta(minutes=5)
    payload = order_events_pb2.OrderCreated.FromString(message.data)
    assert payload.order.order_id == order.order_id
    assert payload.order.store_id == store_id


async def test_a_resent_batch_is_stored_once(db, store, stream, jetstream):
    relay = new_relay(db, relay_settings(db.engine.url.render_as_string(False), None))
    await write(db, store, "a", "b", "c")
    assert await relay.round() is False  # acquires, places (no broker: delivered too)
    async with db.engine.connect() as connection:
        rows = (
            (
                await connection.execute(
                    select(OutboxEvent.__table__)
                    .where(OutboxEvent.store_id == store)
                    .order_by(OutboxEvent.feed_position)
                )
            )
            .mappings()
            .all()
        )
    publisher = EventPublisher(NATS_URL, stream[0], stream[1])
    ready = asyncio.Event()
    publisher._on_ready = ready.set
    publisher.start()
    try:
        await asyncio.wait_for(ready.wait(), 30)
        assert await publisher.publish(rows) == 3
        assert await publisher.publish(rows) == 3
    finally:
        await publisher.close()
        await relay.stop()
    found = await messages(jetstream, stream, store)
    assert sorted(m.headers["ce-id"] for m in found) == sorted(r["event_id"] for r in rows)
    assert [m.data for m in found] == [b"a", b"b", b"c"]


async def test_a_late_commit_is_placed_and_published_after_the_others(
    db, store, stream, jetstream, is_postgresql
):
    if not is_postgresql:
        pytest.skip("SQLite has one writer at a time: a commit cannot overtake another")
    relay = new_relay(db, relay_settings(db.engine.url.render_as_string(False), stream))
    relay.start()
    try:
        async with db.maintenance() as held:
            # Inserted first (the smaller id), committed last.
            await append(held, store, [Noted("late", "late")], db.event_encoders)
            for key in ("x1", "x2", "x3"):
                await write(db, store, key, thing=key)
            await eventually(lambda: has(jetstream, stream, store, 3))
            await held.commit()
        await eventually(lambda: has(jetstream, stream, store, 4))
    finally:
        await relay.stop()
    found = await messages(jetstream, stream, store)
    assert [m.data for m in found] == [b"x1", b"x2", b"x3", b"late"]
    async with db.engine.connect() as connection:
        positions = (
            await connection.execute(
                text("SELECT payload, feed_position FROM outbox_events WHERE store_id = :s"),
                {"s": store},
            )
        ).all()
    by_key = {bytes(payload): position for payload, position in positions}
    assert by_key[b"late"] > max(by_key[b"x1"], by_key[b"x2"], by_key[b"x3"])


async def test_each_subject_is_published_in_commit_order(db, store, stream, jetstream):
    relay = new_relay(db, relay_settings(db.engine.url.render_as_string(False), stream))
    relay.start()

    async def writer(thing: str) -> None:
        for n in range(15):
            await write(db, store, f"{thing}-{n}", thing=thing)

    try:
        await asyncio.gather(*(writer(thing) for thing in ("p", "q", "r")))
        await eventually(lambda: has(jetstream, stream, store, 45))
    finally:
        await relay.stop()
    per_subject: dict[str, list[int]] = {}
    for message in await messages(jetstream, stream, store):
        per_subject.setdefault(message.headers["ce-subject"], []).append(
            int(message.headers["ce-sequence"])
        )
        key = message.data.decode()
        assert key.split("-")[1] == str(int(message.headers["ce-sequence"]) - 1)
    assert per_subject == {f"things/{t}": list(range(1, 16)) for t in ("p", "q", "r")}


async def test_one_relay_publishes_and_another_takes_over_when_it_dies(
    db, store, stream, jetstream
):
    settings = relay_settings(
        db.engine.url.render_as_string(False), stream, event_relay_lease_seconds=1.0
    )
    first, second = new_relay(db, settings), new_relay(db, settings)
    first.start()
    second.start()
    try:
        holder = await eventually(lambda: _holder(first, second), what="a holder")
        standby = second if holder is first else first
        await write(db, store, *(f"e{n}" for n in range(20)))
        await eventually(lambda: has(jetstream, stream, store, 20))
        assert not standby.holding
        assert (await relay_row(db))["holder"] == holder.holder
        # Dies without handing the lease back: the standby waits for it to run out.
        assert holder._task is not None
        holder._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await holder._task
        holder._task = None
        holder.holding = False
        await write(db, store, *(f"f{n}" for n in range(10)))
        await eventually(lambda: standby.holding, seconds=10, what="take-over")
        await eventually(lambda: has(jetstream, stream, store, 30))
    finally:
        await first.stop()
        await second.stop()
    found = await messages(jetstream, stream, store)
    assert len({m.headers["ce-id"] for m in found}) == 30
    assert (await relay_row(db))["holder"] == ""  # a clean stop hands the lease back


async def _holder(*relays: EventRelay) -> EventRelay | None:
    holding = [relay for relay in relays if relay.holding]
    return holding[0] if holding else None


async def test_a_stopped_relay_hands_over_at_once(db, store, stream, jetstream):
    # A lease far longer than the test's wait: only the release explains a take-over.
    settings = relay_settings(
        db.engine.url.render_as_string(False), stream, event_relay_lease_seconds=120.0
    )
    first, second = new_relay(db, settings), new_relay(db, settings)
    first.start()
    await eventually(lambda: first.holding)
    second.start()
    await first.stop()
    second.events_committed.notify()
    await write(db, store, "after")
    second.events_committed.notify()
    try:
        await eventually(lambda: second.holding, seconds=15)
        await eventually(lambda: has(jetstream, stream, store, 1))
    finally:
        await second.stop()


async def test_writes_succeed_while_nats_is_down_and_the_backlog_follows(
    db, store, stream, tmp_path
):
    port = free_port()
    url = f"nats://127.0.0.1:{port}"
    settings = relay_settings(db.engine.url.render_as_string(False), stream, nats_url=url)
    relay = new_relay(db, settings)
    relay.start()
    broker: subprocess.Popen[bytes] | None = None
    try:
        await write(db, store, *(f"k{n}" for n in range(30)))
        await eventually(lambda: _placed(db, store, 30))
        assert (await relay_row(db))["delivered_position"] < (await relay_row(db))[
            "placed_position"
        ]
        broker = subprocess.Popen(  # noqa: ASYNC220 (starts and returns at once)
            [NATS_SERVER, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(tmp_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = await eventually(lambda: _connect(url))
        try:
            js = client.jetstream()
            await eventually(lambda: has(js, stream, store, 30), seconds=60)
            assert [m.data for m in await messages(js, stream, store)] == [
                f"k{n}".encode() for n in range(30)
            ]
        finally:
            await client.close()
        row = await relay_row(db)
        assert row["delivered_position"] == row["placed_position"]
    finally:
        await relay.stop()
        if broker is not None:
            broker.terminate()
            broker.wait(10)


async def _connect(url: str) -> Any:
    try:
        return await nats.connect(url, allow_reconnect=False, connect_timeout=1)
    except Exception:
        return None


async def _placed(db: TenantDatabase, store_id: int, count: int) -> bool:
    async with db.engine.connect() as connection:
        placed = await connection.scalar(
            text(
                "SELECT count(*) FROM outbox_events WHERE store_id = :s "
                "AND feed_position IS NOT NULL"
            ),
            {"s": store_id},
        )
    return placed == count


async def test_prune_deletes_only_old_delivered_events(db, store):
    settings = relay_settings(db.engine.url.render_as_string(False), None, event_retention_hours=1)
    relay = new_relay(db, settings)
    await write(db, store, *(f"old{n}" for n in range(5)))
    await write(db, store, "recent")
    await relay.round()  # places and (no broker) delivers them
    await write(db, store, "unplaced")
    # Every event of the feed (this module's earlier tests' too) but "recent".
    long_ago = datetime.now(UTC) - timedelta(hours=2)
    async with db.engine.begin() as connection:
        await connection.execute(
            update(OutboxEvent)
            .where(~((OutboxEvent.store_id == store) & (OutboxEvent.payload == b"recent")))
            .values(occurred_at=long_ago)
        )
    try:
        await relay.prune()
    finally:
        await relay.stop()
    async with db.engine.connect() as connection:
        left = (
            await connection.execute(
                text("SELECT payload FROM outbox_events WHERE store_id = :s ORDER BY id"),
                {"s": store},
            )
        ).all()
        recent = await connection.scalar(
            text("SELECT feed_position FROM outbox_events WHERE payload = :p"), {"p": b"recent"}
        )
    assert [bytes(row[0]) for row in left] == [b"recent", b"unplaced"]
    row = await relay_row(db)
    assert row["pruned_position"] == recent - 1  # everything before "recent"
    async with db.engine.connect() as connection:
        assert (
            await connection.scalar(
                text("SELECT count(*) FROM outbox_events WHERE feed_position < :p"), {"p": recent}
            )
            == 0
        )


async def test_wakes_on_commit_not_by_polling(
    db, store, stream, jetstream, relay_url, is_postgresql
):
    # Polls every 30 s and renews every 20 s: an event sooner than that was woken.
    settings = relay_settings(
        relay_url, stream, event_poll_seconds=30.0, event_relay_lease_seconds=60.0
    )
    committed = Signal()
    relay = new_relay(db, settings, committed)
    relay.start()
    writer = db
    other: TenantDatabase | None = None
    try:
        await eventually(lambda: relay.holding)
        if is_postgresql:
            assert relay.notifications is not None
            await eventually(lambda: relay.notifications.listening.is_set())  # type: ignore[union-attr]
            # Another engine, as another process: only NOTIFY can tell the relay.
            other = TenantDatabase(create_engine(relay_url, pool_size=1))
            other.event_encoders = encoders()
            writer = other
        else:
            db.events_committed = committed.notify  # as Application wires it
        await eventually(lambda: _idle(relay))
        await write(writer, store, "woken")
        await eventually(lambda: has(jetstream, stream, store, 1), seconds=10)
    finally:
        db.events_committed = None
        await relay.stop()
        if other is not None:
            await other.engine.dispose()


async def _idle(relay: EventRelay) -> bool:
    # Whether the relay has published everything and sleeps (no round in flight).
    row = await relay_row(relay.database)
    return row["delivered_position"] == row["placed_position"]


async def test_commerce_relay_command(relay_url, db, store, stream, jetstream):
    env = clean_environment(
        DATABASE_URL=relay_url,
        COMMERCE_NATS_URL=NATS_URL,
        COMMERCE_NATS_STREAM=stream[0],
        COMMERCE_NATS_SUBJECT_PREFIX=stream[1],
        COMMERCE_EVENT_POLL_SECONDS="0.2",
    )
    process = subprocess.Popen(  # noqa: ASYNC220 (starts and returns at once)
        [COMMERCE, "relay"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        await write(db, store, "via-cli")
        await eventually(
            lambda: has(jetstream, stream, store, 1) if process.poll() is None else True
        )
        assert process.poll() is None
        assert [m.data for m in await messages(jetstream, stream, store)] == [b"via-cli"]
    finally:
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=30)[0]
        print(output)
    assert process.returncode == 0, output
    assert "event relay: relaying" in output
    assert (await relay_row(db))["holder"] == ""


async def test_a_holder_whose_lease_was_taken_places_nothing(db, store):
    settings = relay_settings(db.engine.url.render_as_string(False), None)
    first, second = new_relay(db, settings), new_relay(db, settings)
    try:
        await first.round()
        assert first.holding
        # As if it stalled past its lease and the other took over meanwhile.
        async with db.engine.begin() as connection:
            await connection.execute(
                update(EventRelayState).values(lease_expires_at=datetime(2000, 1, 1, tzinfo=UTC))
            )
        await second.round()
        assert second.holding
        await write(db, store, "fenced")
        await first.round()
        assert not first.holding
        assert not await _placed(db, store, 1)
        await second.round()
        assert await _placed(db, store, 1)
    finally:
        await first.stop()
        await second.stop()


async def test_delivered_position_stops_at_the_last_event_jetstream_stored(
    db, store, stream, jetstream
):
    # The operator's stream (left as it is) takes two messages, then refuses more.
    await jetstream.add_stream(
        StreamConfig(
            name=stream[0],
            subjects=[f"{stream[1]}.>"],
            max_msgs=2,
            discard=DiscardPolicy.NEW,
        )
    )
    relay = new_relay(db, relay_settings(db.engine.url.render_as_string(False), stream))
    relay.start()
    try:
        await write(db, store, *(f"m{n}" for n in range(5)))
        await eventually(lambda: has(jetstream, stream, store, 2))
        second = await _position(db, b"m1")
        await eventually(lambda: _delivered_is(db, second))
        assert (await jetstream.stream_info(stream[0])).config.max_msgs == 2
        await jetstream.update_stream(
            StreamConfig(name=stream[0], subjects=[f"{stream[1]}.>"], max_msgs=-1)
        )
        await eventually(lambda: has(jetstream, stream, store, 5))
        await eventually(lambda: _delivered_is(db, second + 3))
    finally:
        await relay.stop()
    found = await messages(jetstream, stream, store)
    assert [m.data for m in found] == [f"m{n}".encode() for n in range(5)]


async def _position(db: TenantDatabase, payload: bytes) -> int:
    async with db.engine.connect() as connection:
        position = await connection.scalar(
            text("SELECT feed_position FROM outbox_events WHERE payload = :p"), {"p": payload}
        )
    return int(position)


async def _delivered_is(db: TenantDatabase, position: int) -> bool:
    return (await relay_row(db))["delivered_position"] == position


async def test_the_relay_outlives_its_database_connections(
    db, store, stream, jetstream, relay_url, is_postgresql
):
    if not is_postgresql:
        pytest.skip("PostgreSQL connections are dropped from the server's side")
    settings = relay_settings(
        relay_url, stream, event_poll_seconds=30.0, event_relay_lease_seconds=60.0
    )
    relay = new_relay(db, settings)
    relay.start()
    other = TenantDatabase(create_engine(relay_url, pool_size=1))
    other.event_encoders = encoders()
    try:
        notifications = relay.notifications
        assert notifications is not None
        await eventually(lambda: relay.holding and notifications.listening.is_set())
        await write(other, store, "before")
        await eventually(lambda: has(jetstream, stream, store, 1))
        listener = notifications.server_pid
        # Every connection to the database but this one's: the relay's pool and its
        # listener (and the writer's pool) are gone at once.
        name = make_url(relay_url).database
        await _admin(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "  # noqa: S608 (our own name)
            f"WHERE datname = '{name}' AND pid <> pg_backend_pid()"
        )
        await eventually(
            lambda: notifications.listening.is_set() and notifications.server_pid != listener,
            what="listening again",
        )
        await eventually(lambda: _write_tolerating_drops(other, store, "after"))
        # Woken by NOTIFY again: no renewal or poll is due for 20 s.
        await eventually(lambda: has(jetstream, stream, store, 2), seconds=10)
    finally:
        await relay.stop()
        await other.engine.dispose()
    found = await messages(jetstream, stream, store)
    assert [m.data for m in found] == [b"before", b"after"]


async def _write_tolerating_drops(db: TenantDatabase, store_id: int, key: str) -> bool:
    # The writer's own pooled connection was dropped too: its first use may fail.
    try:
        await write(db, store_id, key)
    except Exception:
        return False
    return True


async def test_other_processes_learn_that_events_were_placed(db, store, relay_url, is_postgresql):
    if not is_postgresql:
        pytest.skip("SQLite's event streams poll")
    # What another process's event streams listen with (its own relay's listener).
    placed = Signal()
    listener = DatabaseNotifications(make_url(relay_url), {FEED_CHANNEL: placed.notify})
    listener.start()
    relay = new_relay(db, relay_settings(relay_url, None))
    try:
        await eventually(lambda: listener.listening.is_set())
        await relay.round()  # takes the lease (and places what is there)
        await write(db, store, "seen elsewhere")
        mark = placed.mark()
        await relay.round()
        assert await Signal.wait(mark, 10)
    finally:
        await relay.stop()
        await listener.stop()


async def test_the_python_consumer_reads_a_stores_events(relay_url, stream, jetstream):
    """clients/python/event_consumer.py, which knows only the stubs and nats-py, reads
    what the relay published for one store, decoded by its ce-type, and no other
    store's events."""
    settings = relay_settings(relay_url, stream)
    async with serving(settings, ["orders"]) as (app, channel):
        async with app.database.maintenance() as statements:
            store_id = (await create_store(statements, "consumer")).id
            other_store = (await create_store(statements, "not consumed")).id
            await statements.commit()
        orders = order_service_pb2_grpc.OrderServiceStub(channel)
        placed = [await create_order(orders, store_id) for _ in range(2)]
        await create_order(orders, other_store)
        await eventually(lambda: has(jetstream, stream, store_id, 2), what="the events")
        await eventually(lambda: has(jetstream, stream, other_store, 1), what="the other's")
    consumer = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "clients" / "python" / "event_consumer.py"),
        NATS_URL,
        str(store_id),
        "--stream",
        stream[0],
        "--prefix",
        stream[1],
        "--durable",
        f"consumer-{uuid.uuid4().hex[:8]}",
        "--idle",
        "1",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd="/",  # nothing of the checkout on its path
    )
    stdout, stderr = await asyncio.wait_for(consumer.communicate(), timeout=60)
    assert consumer.returncode == 0, stderr.decode()
    seen = [json.loads(line) for line in stdout.decode().splitlines()]
    assert [event["subject"] for event in seen] == [f"orders/{order.order_id}" for order in placed]
    assert {event["type"] for event in seen} == {"commerce.orders.v1.OrderCreated"}
    assert {event["source"] for event in seen} == {f"commerce/stores/{store_id}"}
    assert [event["payload"]["order"]["orderId"] for event in seen] == [
        str(order.order_id) for order in placed
    ]


async def test_the_node_consumer_reads_a_stores_events(
    built_node_client, relay_url, stream, jetstream
):
    """clients/node/src/event_consumer.ts, with the `nats` package and the generated
    TypeScript, reads one store's published events decoded by their ce-type."""
    settings = relay_settings(relay_url, stream)
    async with serving(settings, ["orders"]) as (app, channel):
        async with app.database.maintenance() as statements:
            store_id = (await create_store(statements, "node consumer")).id
            other_store = (await create_store(statements, "not consumed")).id
            await statements.commit()
        orders = order_service_pb2_grpc.OrderServiceStub(channel)
        placed = [await create_order(orders, store_id) for _ in range(2)]
        await create_order(orders, other_store)
        await eventually(lambda: has(jetstream, stream, store_id, 2), what="the events")
        await eventually(lambda: has(jetstream, stream, other_store, 1), what="the other's")
    consumer = await asyncio.create_subprocess_exec(
        "node",
        str(NODE_CLIENT / "dist" / "event_consumer.js"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={
            "PATH": os.environ["PATH"],
            "NATS_URL": NATS_URL,
            "COMMERCE_STORE_ID": str(store_id),
            "COMMERCE_NATS_STREAM": stream[0],
            "COMMERCE_NATS_SUBJECT_PREFIX": stream[1],
        },
    )
    stdout, stderr = await asyncio.wait_for(consumer.communicate(), timeout=60)
    assert consumer.returncode == 0, stderr.decode()
    seen = [json.loads(line) for line in stdout.decode().splitlines()]
    assert [event["subject"] for event in seen] == [f"orders/{order.order_id}" for order in placed]
    assert [event["sequence"] for event in seen] == ["1", "1"]
    assert [event["payload"]["order"]["orderId"] for event in seen] == [
        str(order.order_id) for order in placed
    ]


@pytest.fixture
def unmigrated_postgresql() -> Iterator[str]:
    name = f"commerce_unmigrated_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.mark.skipif("postgresql" not in BACKENDS, reason="a PostgreSQL database never migrated")
async def test_a_relay_that_cannot_work_says_why_once(unmigrated_postgresql, caplog):
    """A failure that is no outage (here: a database never migrated) is logged as a
    warning naming it, once however often the relay tries again."""
    url = unmigrated_postgresql
    database = TenantDatabase(create_engine(url, pool_size=1))
    relay = new_relay(database, relay_settings(url, None))
    failures = []
    try:
        with caplog.at_level("WARNING", logger="services.core.events.relay"):
            relay.start()

            def failed() -> list[Any]:
                failures[:] = [r for r in caplog.records if "a round failed" in r.getMessage()]
                return failures

            await eventually(failed, what="a warning")
            # The relay backs off 0.1, 0.2, 0.4 s ...: a few more tries within a second.
            tries = relay.tries
            await eventually(lambda: relay.tries >= tries + 3, what="more tries")
    finally:
        await relay.stop()
        await database.engine.dispose()
    assert len(failed()) == 1
    assert "event_relay" in failures[0].getMessage()  # names what is missing
