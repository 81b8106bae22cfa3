"""Events under faults, black-box: `commerce serve` publishes to a private NATS server
(own port, own store folder) while clients create orders and the test restarts the
NATS server and, on PostgreSQL, a private database cluster. A JetStream consumer then
must hold every committed order's OrderCreated exactly once, by id, nothing for a
call that failed, and each subject's sequence in order.

Nothing here knows how the relay works: only the settings, the subjects and the
CloudEvents headers that consumers code against."""

from __future__ import annotations

import asyncio
import secrets
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import grpc
import nats
import pytest
from commerce.orders.v1 import order_events_pb2, order_pb2, order_service_pb2
from commerce.orders.v1 import order_service_pb2_grpc as orders_grpc
from grpc_health.v1 import health_pb2

from bench.broker import ordered_subscription
from tests.conftest import BACKENDS
from tests.instances import Cluster, PrivateNats, clusters_available, nats_server_available
from tests.process import (
    clean_environment,
    commerce,
    health_status,
    running_server,
    wait_for,
)

pytestmark = [
    pytest.mark.skipif(not nats_server_available(), reason="needs nats-server (Debian's)"),
    pytest.mark.timeout(900),
]

SERVING = health_pb2.HealthCheckResponse.SERVING
ORDERS = "commerce.orders.v1.OrderService"
STREAM = "COMMERCE_EVENTS"
PREFIX = "commerce.events"
ORDER_CREATED = "commerce.orders.v1.OrderCreated"
# Retried with the same request_id, as a careful client does: the server either did
# the work once or not at all.
RETRYABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.DEADLINE_EXCEEDED,
}
# Orders of a customer that does not exist: refused, so no order and no event.
MISSING_CUSTOMER = 987_654_321
CLIENTS = 4


@dataclass
class Ledger:
    """What the clients saw: every call ends acknowledged or refused for good."""

    calls: int = 0
    retried: int = 0
    acknowledged: dict[str, int] = field(default_factory=dict)  # marker -> order id
    refused: dict[str, grpc.StatusCode] = field(default_factory=dict)  # marker -> status
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self) -> int:
        with self.lock:
            return len(self.acknowledged)


def _order(marker: str, request_id: str, *, refused: bool) -> order_service_pb2.CreateOrderRequest:
    return order_service_pb2.CreateOrderRequest(
        store_id=1,
        customer_id=MISSING_CUSTOMER if refused else 0,
        currency_code="EUR",
        contact_email=marker,
        request_id=request_id,
        line_items=[
            order_pb2.OrderLineItem(sku="EV-1", name="Fault mug", quantity=1, unit_price_minor=900)
        ],
    )


def create_orders(target: str, stop: threading.Event, ledger: Ledger, worker: int) -> None:
    """Creates orders until stopped, every seventh for a missing customer."""
    with grpc.insecure_channel(target) as channel:
        stub = orders_grpc.OrderServiceStub(channel)
        number = 0
        while not stop.is_set():
            number += 1
            marker = f"w{worker}n{number}.{secrets.token_hex(3)}@example.com"
            request = _order(marker, str(uuid.uuid4()), refused=number % 7 == 0)
            outcome = _until_answered(lambda r=request: stub.CreateOrder(r, timeout=5), ledger)
            with ledger.lock:
                if isinstance(outcome, grpc.StatusCode):
                    ledger.refused[marker] = outcome
                else:
                    ledger.acknowledged[marker] = outcome.order.order_id


def _until_answered(
    call: Callable[[], order_service_pb2.CreateOrderResponse], ledger: Ledger
) -> order_service_pb2.CreateOrderResponse | grpc.StatusCode:
    for attempt in range(600):
        with ledger.lock:
            ledger.calls += 1
        try:
            return call()
        except grpc.RpcError as error:
            code: grpc.StatusCode = error.code()  # type: ignore[attr-defined]
        if code not in RETRYABLE:
            return code
        with ledger.lock:
            ledger.retried += 1
        time.sleep(min(0.05 * 2**attempt, 0.5))
    raise AssertionError("a call never got an answer")


# --- the private servers ------------------------------------------------------------


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[PrivateNats]:
    directory = tmp_path / "nats"
    directory.mkdir()
    server = PrivateNats(directory)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class Database:
    url: str
    cluster: Cluster | None  # None: SQLite, a file no one restarts


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A migrated database holding store 1: a SQLite file, or a private PostgreSQL
    cluster that the test may stop and start."""
    if request.param not in BACKENDS:
        pytest.skip(f"COMMERCE_TEST_BACKENDS leaves out {request.param}")
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'commerce.db'}"
        _prepare(url)
        yield Database(url, None)
        return
    if not clusters_available():
        pytest.skip("needs Debian's postgresql-common (pg_createcluster)")
    cluster = Cluster()
    cluster.create()
    try:
        _prepare(cluster.url)
        yield Database(cluster.url, cluster)
    finally:
        cluster.drop()


def _prepare(url: str) -> None:
    env = clean_environment(DATABASE_URL=url)
    commerce("migrate", env=env)
    commerce("stores", "create", "--name", "Event faults", env=env)


# --- reading what was committed and what was published ------------------------------


def committed_orders(url: str) -> dict[str, list[int]]:
    """The store's orders by contact email (each client's marker)."""

    async def from_postgresql() -> list[tuple[str, int]]:
        connection = await asyncpg.connect(url)
        try:
            rows = await connection.fetch(
                "SELECT contact_email, order_id FROM orders WHERE store_id = 1"
            )
        finally:
            await connection.close()
        return [(row[0], row[1]) for row in rows]

    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as connection:
            rows = connection.execute(
                "SELECT contact_email, order_id FROM orders WHERE store_id = 1"
            ).fetchall()
    else:
        rows = asyncio.run(from_postgresql())
    found: dict[str, list[int]] = {}
    for marker, order_id in rows:
        found.setdefault(marker, []).append(order_id)
    return found


@dataclass(frozen=True)
class Published:
    """One message of the stream, as a consumer sees it."""

    stream_sequence: int
    subject: str
    headers: dict[str, str]
    payload: bytes


async def _read_stream(
    url: str, subjects: str, until: Callable[[list[Published]], bool], seconds: float
) -> list[Published]:
    """Every message on `subjects` from the first, through an ordered consumer, read
    until `until` holds and the consumer has nothing pending, or until the deadline
    (then what came: the checks say what is missing)."""
    deadline = time.monotonic() + seconds
    connection = await nats.connect(url, connect_timeout=10)
    try:
        stream = connection.jetstream(timeout=10)
        consumer = await ordered_subscription(stream, subjects, deadline)
        if consumer is None:
            return []
        seen: list[Published] = []
        pending = 1
        while (pending or not until(seen)) and time.monotonic() < deadline:
            try:
                message = await consumer.next_msg(timeout=2)
            except nats.errors.TimeoutError:
                pending = 0  # nothing more yet: wait for new messages if need be
                continue
            pending = message.metadata.num_pending
            seen.append(
                Published(
                    message.metadata.sequence.stream,
                    message.subject,
                    dict(message.headers or {}),
                    message.data,
                )
            )
        await consumer.unsubscribe()
        return seen
    finally:
        await connection.close()


def read_stream(
    url: str, subjects: str, until: Callable[[list[Published]], bool], timeout: float
) -> list[Published]:
    return asyncio.run(_read_stream(url, subjects, until, timeout))


def check_published(messages: list[Published], committed: dict[str, list[int]]) -> None:
    """Exactly one OrderCreated per committed order, none for any other, each one's
    headers consistent, and every subject's sequence counting up from 1 in the order
    the stream holds them."""
    order_ids = {ids[0] for ids in committed.values()}
    ids = [message.headers.get("ce-id") for message in messages]
    assert None not in ids
    assert len(set(ids)) == len(ids), "a message stored twice"
    created: dict[int, list[Published]] = {}
    sequences: dict[str, list[int]] = {}
    for message in messages:
        headers = message.headers
        assert headers["Nats-Msg-Id"] == headers["ce-id"]
        assert headers["ce-specversion"] == "1.0"
        assert headers["ce-source"] == "commerce/stores/1"
        assert headers["Content-Type"] == "application/protobuf"
        assert message.subject.startswith(f"{PREFIX}.1.")
        sequences.setdefault(headers["ce-subject"], []).append(int(headers["ce-sequence"]))
        if headers["ce-type"] != ORDER_CREATED:
            continue
        assert message.subject == f"{PREFIX}.1.orders.OrderCreated"
        event = order_events_pb2.OrderCreated.FromString(message.payload)
        assert headers["ce-subject"] == f"orders/{event.order.order_id}"
        assert committed.get(event.order.contact_email) == [event.order.order_id]
        created.setdefault(event.order.order_id, []).append(message)
    assert set(created) - order_ids == set(), "events of orders that do not exist"
    assert order_ids - set(created) == set(), "committed orders without their event"
    assert all(len(events) == 1 for events in created.values())
    for subject, numbers in sequences.items():
        assert numbers == list(range(1, len(numbers) + 1)), subject


# --- the test -----------------------------------------------------------------------


def test_every_committed_order_is_published_once_through_restarts(tmp_path, database, broker):
    """Clients create orders (some refused) while the NATS server restarts and, on
    PostgreSQL, the database does too. Afterwards the stream holds one OrderCreated
    per committed order and nothing else; every acknowledged order is committed once."""
    env = clean_environment(
        DATABASE_URL=database.url,
        COMMERCE_NATS_URL=broker.url,
        COMMERCE_NATS_STREAM=STREAM,
        COMMERCE_NATS_SUBJECT_PREFIX=PREFIX,
    )
    flags = ("--db-connect-timeout", "1", "--health-check-interval", "0.3")
    ledger = Ledger()
    stop = threading.Event()
    with running_server(tmp_path, env, *flags) as server, ThreadPoolExecutor(CLIENTS) as pool:
        clients = [
            pool.submit(create_orders, server.target, stop, ledger, worker)
            for worker in range(CLIENTS)
        ]
        try:

            def more_orders(count: int) -> None:
                """Until `count` more orders are acknowledged (a client's failure ends
                the wait at once)."""
                goal = ledger.count() + count
                wait_for(
                    lambda: ledger.count() >= goal or any(c.done() for c in clients),
                    timeout=180,
                )
                for client in clients:
                    if client.done():
                        client.result()

            more_orders(20)
            broker.stop()
            # NATS away: orders keep being taken, their events wait in the database.
            more_orders(50)
            broker.start()
            more_orders(20)
            if database.cluster is not None:
                retried = ledger.retried
                database.cluster.stop()
                try:
                    # The outage is seen: calls fail and are retried.
                    wait_for(lambda: ledger.retried > retried, timeout=120)
                finally:
                    database.cluster.start()
                wait_for(lambda: health_status(server.port, ORDERS) == SERVING, timeout=120)
                more_orders(30)
        finally:
            stop.set()
        for client in clients:
            client.result(timeout=180)  # re-raises a client's failed assertion

        committed = committed_orders(database.url)
        for marker, order_id in ledger.acknowledged.items():
            assert committed.get(marker) == [order_id], marker
        for marker in ledger.refused:
            assert marker not in committed, marker
        assert all(len(ids) == 1 for ids in committed.values())  # no order doubled
        wanted = {ids[0] for ids in committed.values()}

        def every_order_published(seen: list[Published]) -> bool:
            subjects = {message.headers.get("ce-subject") for message in seen}
            return {f"orders/{order_id}" for order_id in wanted} <= subjects

        messages = read_stream(broker.url, f"{PREFIX}.1.>", every_order_published, timeout=300)
        assert server.process.poll() is None, server.output()[-3000:]
    check_published(messages, committed)
    assert set(ledger.refused.values()) <= {
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.FAILED_PRECONDITION,
    }
    assert ledger.refused, "no refused call: the test proves nothing about failed calls"
    print(  # pytest -s shows the figures
        f"orders acknowledged: {len(ledger.acknowledged)}, refused: {len(ledger.refused)}, "
        f"calls: {ledger.calls}, retried: {ledger.retried}, messages: {len(messages)}"
    )
