"""Shared fixtures: a real database (SQLite file and a fresh PostgreSQL database, both
built by the Alembic migrations), a real gRPC server on a loopback port, real stubs.

Every test creates its own store, and every row is scoped to a store, so tests never
see each other's data and need no cleanup between them.

COMMERCE_TEST_BACKENDS=sqlite (or postgresql) limits the run to one database;
COMMERCE_TEST_POSTGRES_URL points at another PostgreSQL server; COMMERCE_TEST_POOLER_URL
at a PgBouncer in pool_mode=transaction in front of it, which the servers (and the
tests' own engines) then go through, with COMMERCE_DATABASE_POOLER=transaction in the
environment (scripts/test-pgbouncer). Migrations and the admin commands go direct."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import grpc
import pytest
from commerce.customers.v1 import customer_service_pb2_grpc
from commerce.loyalty.v1 import customer_loyalty_service_pb2_grpc
from commerce.orders.v1 import customer_order_service_pb2_grpc, order_service_pb2_grpc
from hypothesis import settings as hypothesis_settings
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bench.replication import ReplicatedPair, replication_available, with_driver
from services.core.db.engine import create_engine
from services.core.db.unit_of_work import TenantDatabase
from services.core.settings import Settings
from services.customers.messages import register_event_encoders as register_customer_events
from services.loyalty.messages import register_event_encoders as register_loyalty_events
from services.migrations import upgrade
from services.orders.messages import register_event_encoders as register_order_events
from services.server import Application
from tests.orm import UnitOfWork, create_session_factory, create_store, set_store_active
from tests.process import ROOT
from tests.statement_log import SERVER_STATEMENTS

POSTGRES_URL = os.environ.get(
    "COMMERCE_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
BACKENDS = os.environ.get("COMMERCE_TEST_BACKENDS", "sqlite,postgresql").split(",")
POOLER_URL = os.environ.get("COMMERCE_TEST_POOLER_URL", "")

NODE_CLIENT = ROOT / "clients" / "node"

# The lowest bcrypt cost: tests check behaviour, not hashing speed.
TEST_BCRYPT_ROUNDS = 4

# Property-based tests: the same examples on every run by default, so that CI is
# reproducible; HYPOTHESIS_PROFILE=explore draws new, and more, examples each run.
hypothesis_settings.register_profile("repeatable", max_examples=60, derandomize=True, deadline=None)
hypothesis_settings.register_profile("explore", max_examples=500, deadline=None)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))


def _asyncpg_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


# Runs after every other test on PostgreSQL: it checks every statement the session's
# server sent.
CITUS_STATEMENTS_MODULE = "test_citus_statements.py"


@pytest.hookimpl(trylast=True)  # after pytest's own grouping by fixture parameters
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Moves the Citus statement check behind the last test on the session's
    PostgreSQL database, so that it sees the statements of every test before it
    (it drives each RPC itself too, so it stands alone). Not simply last: tests on
    SQLite may follow, and the PostgreSQL server would be started again for it."""
    checks = [item for item in items if item.path.name == CITUS_STATEMENTS_MODULE]
    if not checks:
        return
    rest = [item for item in items if item.path.name != CITUS_STATEMENTS_MODULE]
    on_postgresql = [
        index
        for index, item in enumerate(rest)
        if getattr(item, "callspec", None) is not None
        and item.callspec.params.get("database_url") == "postgresql"
    ]
    at = on_postgresql[-1] + 1 if on_postgresql else len(rest)
    items[:] = rest[:at] + checks + rest[at:]


@pytest.fixture(scope="session", params=BACKENDS)
def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A migrated, empty database of each backend, for the whole session."""
    if request.param == "sqlite":
        path: Path = tmp_path_factory.mktemp("sqlite") / "commerce.db"
        url = f"sqlite+aiosqlite:///{path}"
        upgrade(url)
        yield url
        return
    name = f"commerce_test_{uuid.uuid4().hex[:12]}"
    admin = _asyncpg_dsn(POSTGRES_URL)

    async def admin_command(sql: str) -> None:
        connection = await asyncpg.connect(admin)
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    asyncio.run(admin_command(f'CREATE DATABASE "{name}"'))
    url = make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    try:
        upgrade(url)
        yield through_pooler(url)
    finally:
        asyncio.run(admin_command(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def through_pooler(url: str) -> str:
    """`url`, through COMMERCE_TEST_POOLER_URL's PgBouncer when there is one."""
    if not POOLER_URL:
        return url
    pooler = make_url(POOLER_URL)
    return make_url(url).set(host=pooler.host, port=pooler.port).render_as_string(False)


@pytest.fixture(scope="session")
def replicated_postgres() -> Iterator[ReplicatedPair]:
    """A private PostgreSQL primary, migrated, and its streaming replica, for the whole
    session (tests.replication); never the shared server."""
    if "postgresql" not in BACKENDS or not replication_available():
        pytest.skip("needs PostgreSQL and Debian's postgresql-common")
    pair = ReplicatedPair()
    pair.create()
    try:
        upgrade(with_driver(pair.primary_url))
        pair.wait_until_streaming()
        yield pair
    finally:
        pair.drop()


@pytest.fixture(scope="session")
def backend(database_url: str) -> str:
    return make_url(database_url).get_backend_name()


@pytest.fixture(scope="session")
def settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        bcrypt_rounds=TEST_BCRYPT_ROUNDS,
        page_token_secret="test-page-token-secret",
        listen_address="127.0.0.1:0",
        db_pool_size=5,
    )


@pytest.fixture(scope="session")
async def sessions(settings: Settings) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions for arranging and checking data directly in the database."""
    engine = create_engine(settings.database_url, pool_size=2, pooler=settings.database_pooler)
    yield create_session_factory(engine)
    await engine.dispose()


@pytest.fixture(scope="session")
async def database(settings: Settings) -> AsyncIterator[TenantDatabase]:
    """What service layers get, for tests that call them without gRPC."""
    database = TenantDatabase(
        create_engine(settings.database_url, pool_size=5, pooler=settings.database_pooler)
    )
    # What mounting the modules would register.
    register_customer_events(database.event_encoders)
    register_order_events(database.event_encoders)
    register_loyalty_events(database.event_encoders)
    yield database
    database.close()
    await database.engine.dispose()


@pytest.fixture(scope="session")
async def server(settings: Settings) -> AsyncIterator[Application]:
    app = Application(settings)
    # Its statements, for the Citus check that runs last (pytest_collection_modifyitems).
    SERVER_STATEMENTS.watch(app.engine)
    await app.start("127.0.0.1:0")
    yield app
    await app.stop(grace=1)


@pytest.fixture(scope="session")
async def channel(server: Application) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield channel


@pytest.fixture
def customers(channel: grpc.aio.Channel) -> customer_service_pb2_grpc.CustomerServiceStub:
    return customer_service_pb2_grpc.CustomerServiceStub(channel)


@pytest.fixture
def orders(channel: grpc.aio.Channel) -> order_service_pb2_grpc.OrderServiceStub:
    return order_service_pb2_grpc.OrderServiceStub(channel)


@pytest.fixture
def customer_orders(
    channel: grpc.aio.Channel,
) -> customer_order_service_pb2_grpc.CustomerOrderServiceStub:
    return customer_order_service_pb2_grpc.CustomerOrderServiceStub(channel)


@pytest.fixture
def loyalty(
    channel: grpc.aio.Channel,
) -> customer_loyalty_service_pb2_grpc.CustomerLoyaltyServiceStub:
    return customer_loyalty_service_pb2_grpc.CustomerLoyaltyServiceStub(channel)


async def new_store(sessions: async_sessionmaker[AsyncSession], *, active: bool = True) -> int:
    async with UnitOfWork(sessions) as uow:
        store = await create_store(uow.session, f"store {uuid.uuid4().hex[:8]}")
        if not active:
            await set_store_active(uow.session, store.id, False)
        await uow.commit()
    return store.id


@pytest.fixture
async def store_id(sessions: async_sessionmaker[AsyncSession]) -> int:
    """A fresh, active store of this test's own."""
    return await new_store(sessions)


@pytest.fixture
async def other_store_id(sessions: async_sessionmaker[AsyncSession]) -> int:
    """A second store, to check that nothing crosses between stores."""
    return await new_store(sessions)


@pytest.fixture(scope="session")
def built_node_client() -> None:
    """Generates the TypeScript from protos/ and compiles the client, as docs/api.md says."""
    if shutil.which("node") is None or not (ROOT / "node_modules").is_dir():
        pytest.fail("the Node client needs Node.js 20+ and `npm ci` (scripts/setup runs it)")
    for command in (
        ["npx", "--no-install", "buf", "generate"],
        ["npx", "--no-install", "tsc", "-p", str(NODE_CLIENT)],
    ):
        subprocess.run(command, cwd=ROOT, check=True, capture_output=True, timeout=300)
