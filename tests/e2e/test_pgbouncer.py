"""The suite behind a real PgBouncer in pool_mode=transaction, whose few server
connections go to whichever client has a transaction to run: with
database_pooler=transaction, server processes sharing a pool of two work (creates,
reads, the event feed); without it, a statement prepared on one server connection
is looked for on another and the call fails."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import asyncpg
import grpc
import pytest
from commerce.customers.v1 import customer_service_pb2 as customers_pb
from commerce.customers.v1 import customer_service_pb2_grpc
from commerce.events.v1 import event_service_pb2, event_service_pb2_grpc
from commerce.orders.v1 import order_service_pb2_grpc
from sqlalchemy.engine import make_url

from bench.pooler import PrivatePgBouncer, pgbouncer_available
from services.core.settings import Settings
from tests.conftest import POSTGRES_URL, TEST_BCRYPT_ROUNDS
from tests.e2e.helpers import create_customer, create_order, serving
from tests.process import clean_environment, listeners, running_server, wait_for

pytestmark = pytest.mark.skipif(
    not pgbouncer_available(), reason="no pgbouncer (scripts/setup-pgbouncer installs it)"
)

Code = grpc.StatusCode
SERVER_CONNECTIONS = 2  # what PgBouncer opens to PostgreSQL for the database
CLIENT_CONNECTIONS = 8
CUSTOMERS = 24
DEADLINE = 60.0


@pytest.fixture
def postgresql(backend: str) -> None:
    if backend != "postgresql":
        pytest.skip("PgBouncer pools PostgreSQL connections")


def pooler_in(*, ignored: tuple[str, ...] = ()) -> Iterator[PrivatePgBouncer]:
    pooler = PrivatePgBouncer(POSTGRES_URL, pool_size=SERVER_CONNECTIONS, ignored=ignored)
    try:
        pooler.start()
        yield pooler
    finally:
        pooler.stop()


@pytest.fixture
def pooler(postgresql: None) -> Iterator[PrivatePgBouncer]:
    yield from pooler_in()


async def _feed_types(channel: grpc.aio.Channel, store_id: int) -> list[str]:
    """The types of the store's events in the feed, in order."""
    stub = event_service_pb2_grpc.EventServiceStub(channel)
    types: list[str] = []
    token = ""
    while True:
        page = await stub.ListEvents(
            event_service_pb2.ListEventsRequest(store_id=store_id, page_token=token, page_size=100)
        )
        types += [event.type.rpartition(".")[2] for event in page.events]
        token = page.next_page_token
        if not token:
            return types


async def test_server_processes_share_two_server_connections(
    tmp_path, pooler, database_url, store_id
):
    """Two workers with four connections each, through two server connections:
    customers created and read back at once from many channels, orders placed, and
    every event in the feed (polled for: no LISTEN through the pooler)."""
    env = clean_environment(
        DATABASE_URL=pooler.url(database_url),
        COMMERCE_DATABASE_POOLER="transaction",
        COMMERCE_DB_POOL_SIZE=str(CLIENT_CONNECTIONS // 2),
        COMMERCE_EVENT_POLL_SECONDS="0.2",
    )
    with running_server(tmp_path, env, "--workers", "2") as server:
        wait_for(lambda: len(listeners(server.port)) == 2)
        own_connection = [("grpc.use_local_subchannel_pool", 1)]
        channels = [
            grpc.aio.insecure_channel(server.target, options=own_connection)
            for _ in range(CLIENT_CONNECTIONS)
        ]
        try:

            async def customer_with_order(index: int) -> int:
                channel = channels[index % len(channels)]
                customers = customer_service_pb2_grpc.CustomerServiceStub(channel)
                created = await create_customer(customers, store_id, first_name=f"c{index}")
                got = await customers.GetCustomer(
                    customers_pb.GetCustomerRequest(
                        store_id=store_id, customer_id=created.customer_id
                    )
                )
                assert got.customer.first_name == f"c{index}"
                orders = order_service_pb2_grpc.OrderServiceStub(channel)
                await create_order(orders, store_id, created.customer_id)
                return created.customer_id

            ids = await asyncio.gather(*(customer_with_order(i) for i in range(CUSTOMERS)))
            assert len(set(ids)) == CUSTOMERS

            async with asyncio.timeout(DEADLINE):
                # Polled: the feed's own streams would not say when all are in.
                feed, wanted = channels[0], 2 * CUSTOMERS
                while len(types := await _feed_types(feed, store_id)) < wanted:  # noqa: ASYNC110
                    await asyncio.sleep(0.1)
        finally:
            await asyncio.gather(*(channel.close() for channel in channels))
    assert types.count("CustomerCreated") == CUSTOMERS
    assert types.count("OrderCreated") == CUSTOMERS


@pytest.fixture
def lenient_pooler(postgresql: None) -> Iterator[PrivatePgBouncer]:
    """One that drops plan_cache_mode, which it would otherwise refuse to connect
    with (and which database_pooler=transaction leaves out)."""
    yield from pooler_in(ignored=("plan_cache_mode",))


def _dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.mark.parametrize("pooler_setting", ["transaction", "none"])
async def test_statements_survive_a_change_of_server_connection(
    lenient_pooler, database_url, store_id, pooler_setting, caplog
):
    """The server's one client connection, whose next transaction PgBouncer serves
    from another server connection (the one it used is busy): without the setting,
    the statement asyncpg prepared (and kept) on the first is missing on the second."""
    url = lenient_pooler.url(database_url)
    settings = Settings(
        database_url=url,
        database_pooler=pooler_setting,
        bcrypt_rounds=TEST_BCRYPT_ROUNDS,
        db_pool_size=1,
        event_relay=False,
        store_cache_seconds=0,
    )
    async with serving(settings, ["customers"]) as (_, channel):
        customers = customer_service_pb2_grpc.CustomerServiceStub(channel)
        created = await create_customer(customers, store_id)
        get = customers_pb.GetCustomerRequest(store_id=store_id, customer_id=created.customer_id)
        await customers.GetCustomer(get)  # on the server connection last used
        # Which PgBouncer lends next (last in, first out), to a transaction kept
        # open: the server's next call gets the other one.
        holder = await asyncpg.connect(_dsn(url), statement_cache_size=0)
        try:
            async with holder.transaction():
                await holder.execute("SELECT 1")
                with caplog.at_level(logging.ERROR):
                    try:
                        got = await customers.GetCustomer(get)
                    except grpc.aio.AioRpcError as error:
                        failed: grpc.aio.AioRpcError | None = error
                    else:
                        failed = None
        finally:
            await holder.close()
    if pooler_setting == "transaction":
        assert failed is None
        assert got.customer.customer_id == created.customer_id
    else:
        assert failed is not None
        assert failed.code() == Code.INTERNAL
        assert "prepared statement" in caplog.text
        assert "does not exist" in caplog.text


def _direct(url: str) -> str:
    """`url` straight to POSTGRES_URL's server."""
    server = make_url(POSTGRES_URL)
    return make_url(url).set(host=server.host, port=server.port).render_as_string(False)


@pytest.mark.parametrize("listen", ["direct", "none"])
async def test_the_relay_listens_only_straight_to_postgresql(
    pooler, database_url, settings, listen
):
    """Through a transaction pooler, a LISTEN would hold for one transaction: the
    relay listens on database_listen_url, a connection straight to PostgreSQL, and
    without one it polls."""
    through = settings.model_copy(
        update={
            "database_url": pooler.url(database_url),
            "database_pooler": "transaction",
            "database_listen_url": _direct(database_url) if listen == "direct" else "",
        }
    )
    async with serving(through) as (app, _):
        assert app.relay is not None
        notifications = app.relay.notifications
        if listen == "none":
            assert notifications is None
            return
        assert notifications is not None
        async with asyncio.timeout(DEADLINE):
            await notifications.listening.wait()
        admin = await asyncpg.connect(_dsn(_direct(database_url)))
        try:
            listener = await admin.fetchrow(
                "SELECT datname, state FROM pg_stat_activity WHERE pid = $1",
                notifications.server_pid,
            )
        finally:
            await admin.close()
    assert listener is not None  # a backend of the server's own, not one PgBouncer lends
    assert listener["datname"] == make_url(database_url).database
