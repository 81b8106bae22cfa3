"""Three `commerce serve` processes on one PostgreSQL database, as on three hosts,
called over commerce.client (round_robin over the three, its retry policy). One is
killed with SIGKILL in the middle of a load of reads and of creates that carry a
request_id: no call fails, every request_id made exactly one row, and the two left
carry the load on. PostgreSQL only: the processes share the database, which a
SQLite file on one host cannot stand for.

Also: max_connection_age_seconds, which sends clients away to connect again (and so
to find replicas added since)."""

from __future__ import annotations

import asyncio
import random
import re
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import grpc
import pytest
from commerce.client import connect
from commerce.customers.v1 import customer_service_pb2, customer_service_pb2_grpc
from commerce.events.v1 import event_service_pb2, event_service_pb2_grpc
from commerce.orders.v1 import order_service_pb2, order_service_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy.engine import make_url

from services.migrations import upgrade
from tests.conftest import BACKENDS, POSTGRES_URL
from tests.e2e.helpers import line, serving, unique_email
from tests.process import ServerProcess, clean_environment, commerce, running_server

REPLICAS = 3
# Calls in flight at once: several on each replica when one is killed.
CONCURRENCY = 24
CALLS_BEFORE_KILL = 150
CALLS_AFTER_KILL = 150
WAIT_SECONDS = 90

STORE_ID = 1  # the fresh database's one store
ORDER_CREATED = "commerce.orders.v1.OrderCreated"


@dataclass
class Load:
    """What the callers did: the calls completed, the failures, and which resource
    each request_id got."""

    completed: int = 0
    failures: list[str] = field(default_factory=list)
    customers: dict[str, int] = field(default_factory=dict)
    orders: dict[str, int] = field(default_factory=dict)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)


def served(server: ServerProcess, store_id: int) -> int:
    """How many of this store's calls the server's access log shows answered OK."""
    pattern = rf"commerce\.rpc /commerce\.\S+ store_id={store_id} code=OK"
    return len(re.findall(pattern, server.output()))


async def until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        assert time.monotonic() < deadline, f"not reached in {WAIT_SECONDS} s: {what}"
        await asyncio.sleep(0.05)


async def caller(channel: grpc.aio.Channel, store_id: int, load: Load, seed: int) -> None:
    """Calls one after the other until told to stop: a create of a customer, a create
    of an order (each with a request_id of its own), a get and a list, in turn."""
    customers = customer_service_pb2_grpc.CustomerServiceStub(channel)
    orders = order_service_pb2_grpc.OrderServiceStub(channel)
    chance = random.Random(seed)  # noqa: S311 (which customer to read, not a secret)
    step = seed
    while not load.stopping.is_set():
        step += 1
        request_id = str(uuid.uuid4())
        try:
            match step % 4:
                case 0:
                    created = await customers.CreateCustomer(
                        customer_service_pb2.CreateCustomerRequest(
                            store_id=store_id, email=unique_email("replica"), request_id=request_id
                        )
                    )
                    load.customers[request_id] = created.customer.customer_id
                case 1:
                    placed = await orders.CreateOrder(
                        order_service_pb2.CreateOrderRequest(
                            store_id=store_id,
                            line_items=[line()],
                            currency_code="EUR",
                            request_id=request_id,
                        )
                    )
                    load.orders[request_id] = placed.order.order_id
                case 2:
                    await customers.GetCustomer(
                        customer_service_pb2.GetCustomerRequest(
                            store_id=store_id,
                            customer_id=chance.choice(list(load.customers.values())),
                        )
                    )
                case _:
                    # The second page's token was signed by whichever replica answered
                    # the first: the replicas share page_token_secret.
                    first = await customers.ListCustomers(
                        customer_service_pb2.ListCustomersRequest(store_id=store_id, page_size=2)
                    )
                    await customers.ListCustomers(
                        customer_service_pb2.ListCustomersRequest(
                            store_id=store_id, page_size=2, page_token=first.next_page_token
                        )
                    )
        except grpc.aio.AioRpcError as error:
            load.failures.append(f"step {step % 4}: {error.code().name} {error.details()}")
        load.completed += 1


def _asyncpg(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture
def fresh_database() -> Iterator[str]:
    """A PostgreSQL database of this test's own, migrated, holding store 1: the
    replicas' event relay is then one of theirs, not another test's server."""
    name = f"commerce_replicas_{uuid.uuid4().hex[:12]}"

    async def admin(sql: str) -> None:
        connection = await asyncpg.connect(_asyncpg(POSTGRES_URL))
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    url = make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    try:
        upgrade(url)
        commerce("stores", "create", "--name", "Replicas", env=clean_environment(DATABASE_URL=url))
        yield url
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@contextmanager
def replicas(tmp_path: Path, database_url: str) -> Iterator[list[ServerProcess]]:
    """Three servers on their own ports: one database, one page-token secret."""
    env = clean_environment(
        DATABASE_URL=database_url, COMMERCE_PAGE_TOKEN_SECRET="replicas-share-this-secret"
    )
    with ExitStack() as stack:
        yield [stack.enter_context(running_server(tmp_path, env)) for _ in range(REPLICAS)]


def relays(server: ServerProcess) -> bool:
    return "event relay: relaying" in server.output()


async def _rows(url: str, sql: str) -> dict[str, int]:
    connection = await asyncpg.connect(_asyncpg(url))
    try:
        return {str(key): int(value) for key, value in await connection.fetch(sql, STORE_ID)}
    finally:
        await connection.close()


async def orders_in_feed(channel: grpc.aio.Channel) -> int:
    """The OrderCreated events the feed shows (the relay has placed)."""
    feed = event_service_pb2_grpc.EventServiceStub(channel)
    request = event_service_pb2.ListEventsRequest(
        store_id=STORE_ID, types=[ORDER_CREATED], page_size=1000
    )
    seen = 0
    while True:
        page = await feed.ListEvents(request)
        seen += len(page.events)
        if not page.next_page_token:
            return seen
        request.page_token = page.next_page_token


@pytest.mark.timeout(300)
@pytest.mark.skipif("postgresql" not in BACKENDS, reason="replicas share one PostgreSQL")
async def test_a_replica_killed_under_load_fails_no_call_and_duplicates_nothing(
    tmp_path, fresh_database
):
    """The replica killed is the one relaying events: another takes the relay over,
    and the feed shows each order's event once."""
    with replicas(tmp_path, fresh_database) as servers:
        channel = connect([server.target for server in servers])
        load = Load()
        try:
            # A few customers to read from the start.
            seeding = customer_service_pb2_grpc.CustomerServiceStub(channel)
            for _ in range(3):
                request_id = str(uuid.uuid4())
                created = await seeding.CreateCustomer(
                    customer_service_pb2.CreateCustomerRequest(
                        store_id=STORE_ID, email=unique_email("seed"), request_id=request_id
                    )
                )
                load.customers[request_id] = created.customer.customer_id
            callers = [
                asyncio.create_task(caller(channel, STORE_ID, load, seed))
                for seed in range(CONCURRENCY)
            ]
            try:
                await until(
                    lambda: (
                        load.completed >= CALLS_BEFORE_KILL
                        and all(served(server, STORE_ID) > 0 for server in servers)
                        and any(relays(server) for server in servers)
                    ),
                    "calls answered by each replica, events relayed by one",
                )
                (victim,) = [server for server in servers if relays(server)]
                survivors = [server for server in servers if server is not victim]
                victim.process.kill()  # SIGKILL: no drain, connections reset, lease kept
                await asyncio.to_thread(victim.process.wait)
                at_kill = load.completed
                before = [served(server, STORE_ID) for server in survivors]
                await until(
                    lambda: load.completed >= at_kill + CALLS_AFTER_KILL,
                    "calls completed after the kill",
                )
            finally:
                load.stopping.set()
                await asyncio.gather(*callers)
            after = [served(server, STORE_ID) for server in survivors]

            # A create sent without a request_id is given one by the channel.
            orders = order_service_pb2_grpc.OrderServiceStub(channel)
            unkeyed = await orders.CreateOrder(
                order_service_pb2.CreateOrderRequest(
                    store_id=STORE_ID, line_items=[line()], currency_code="EUR"
                )
            )
            # A survivor took the relay over once the dead one's lease ran out.
            placed = len(load.orders) + 1
            feed_deadline = time.monotonic() + WAIT_SECONDS
            while (in_feed := await orders_in_feed(channel)) < placed:
                assert time.monotonic() < feed_deadline, f"{in_feed} of {placed} in the feed"
                await asyncio.sleep(0.1)
        finally:
            await channel.close()

    assert load.failures == []
    # Both survivors took calls after the kill.
    assert all(later > earlier for earlier, later in zip(before, after, strict=True))
    assert any(relays(server) for server in survivors)
    assert in_feed == placed  # each order's event once, retried or not
    # Exactly one row for each request_id, the one its caller was answered with.
    keys = await _rows(
        fresh_database,
        "SELECT request_id, resource_id FROM idempotency_keys "
        "WHERE store_id = $1 AND operation = 'customers.CreateCustomer'",
    )
    customers = await _rows(
        fresh_database, "SELECT customer_id, customer_id FROM customers WHERE store_id = $1"
    )
    assert keys == load.customers
    assert sorted(map(int, customers)) == sorted(load.customers.values())
    keys = await _rows(
        fresh_database,
        "SELECT request_id, resource_id FROM idempotency_keys "
        "WHERE store_id = $1 AND operation = 'orders.CreateOrder'",
    )
    orders_made = await _rows(
        fresh_database, "SELECT order_id, order_id FROM orders WHERE store_id = $1"
    )
    unkeyed_id = unkeyed.order.order_id
    assert [key for key, order_id in keys.items() if order_id == unkeyed_id] != []
    assert {key: order_id for key, order_id in keys.items() if order_id != unkeyed_id} == (
        load.orders
    )
    assert sorted(map(int, orders_made)) == sorted([*load.orders.values(), unkeyed_id])


async def goaway_within(port: int, seconds: float) -> bool:
    """Opens an HTTP/2 connection like a live, idle client (it acknowledges the
    server's SETTINGS and answers its PINGs): True when the server sends GOAWAY
    within `seconds`."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
    await writer.drain()
    try:
        async with asyncio.timeout(seconds):
            while True:
                header = await reader.readexactly(9)
                length, kind, flags = int.from_bytes(header[:3]), header[3], header[4]
                payload = await reader.readexactly(length)
                if kind == 0x7:
                    return True
                if kind == 0x4 and not flags & 0x1:  # SETTINGS: acknowledged
                    writer.write(b"\x00\x00\x00\x04\x01\x00\x00\x00\x00")
                elif kind == 0x6 and not flags & 0x1:  # PING: answered
                    writer.write(b"\x00\x00\x08\x06\x01\x00\x00\x00\x00" + payload)
                await writer.drain()
    except TimeoutError:
        return False
    finally:
        writer.close()


async def test_max_connection_age_sends_clients_away_to_connect_again(settings):
    """A client connection older than max_connection_age is told GOAWAY, so that the
    client resolves its replicas again; without the setting it lives on."""
    aging = settings.model_copy(update={"max_connection_age_seconds": 1, "grace_seconds": 0})
    async with serving(aging, ["customers"]) as (app, _):
        assert await goaway_within(app.port, seconds=20)
    async with serving(settings, ["customers"]) as (app, _):
        assert not await goaway_within(app.port, seconds=3)


async def test_one_name_streams_and_health_work_over_the_helper_channel(server, store_id):
    """commerce.client with one host:port (a DNS target): its service config is one
    gRPC accepts for unary calls, streams and health checks alike."""
    async with connect(f"localhost:{server.port}") as channel:
        customers = customer_service_pb2_grpc.CustomerServiceStub(channel)
        created = await customers.CreateCustomer(
            customer_service_pb2.CreateCustomerRequest(store_id=store_id, email=unique_email())
        )
        exported = [
            customer.customer_id
            async for page in customers.ExportCustomers(
                customer_service_pb2.ExportCustomersRequest(store_id=store_id)
            )
            for customer in page.customers
        ]
        health = health_pb2_grpc.HealthStub(channel)
        checked = await health.Check(health_pb2.HealthCheckRequest())
    assert exported == [created.customer.customer_id]
    assert checked.status == health_pb2.HealthCheckResponse.SERVING
