"""The migrations build exactly the schema the models describe, on every backend."""

from __future__ import annotations

import asyncio
import configparser
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import insert, inspect, text
from sqlalchemy.engine import make_url

from services.core.db.engine import Base, create_engine
from services.core.db.stores import Store
from services.core.db.unit_of_work import TenantDatabase
from services.customers.models import Customer
from services.migrations import alembic_config, upgrade
from services.orders import queries as order_queries
from services.orders.models import Order
from tests.conftest import POSTGRES_URL


async def test_models_and_migrations_do_not_drift(database_url):
    engine = create_engine(database_url, pool_size=1)
    try:
        async with engine.connect() as connection:
            differences = await connection.run_sync(
                lambda sync: compare_metadata(
                    MigrationContext.configure(sync, opts={"compare_type": True}), Base.metadata
                )
            )
    finally:
        await engine.dispose()
    assert differences == []


async def test_database_is_at_every_module_head(database_url):
    script = ScriptDirectory.from_config(alembic_config(database_url))
    engine = create_engine(database_url, pool_size=1)
    try:
        async with engine.connect() as connection:
            current = await connection.run_sync(
                lambda sync: set(MigrationContext.configure(sync).get_current_heads())
            )
            tables = await connection.run_sync(lambda sync: set(inspect(sync).get_table_names()))
    finally:
        await engine.dispose()
    applied = {revision.revision for revision in script.iterate_revisions(tuple(current), "base")}
    assert applied == {revision.revision for revision in script.walk_revisions()}
    assert {
        "stores",
        "store_counters",
        "customers",
        "customer_addresses",
        "customer_login_throttles",
        "orders",
        "order_line_items",
    } <= tables


def test_each_module_has_its_own_branch(database_url):
    script = ScriptDirectory.from_config(alembic_config(database_url))
    roots = {
        label: revision for revision in script.walk_revisions() for label in revision.branch_labels
    }
    assert {"core", "customers", "orders"} <= set(roots)
    # customers builds on the core's stores table, orders on customers; never the reverse.
    assert "core_0001" in roots["customers"].dependencies
    assert "customers_0001" in roots["orders"].dependencies
    assert not roots["core"].dependencies


def test_alembic_ini_knows_every_module_folder():
    """`alembic` run by hand reads alembic.ini: it must see every module's branch."""
    root = Path(__file__).resolve().parents[2]
    parser = configparser.ConfigParser()
    parser.read(root / "alembic.ini")
    listed = {
        Path(entry.replace("%(here)s", str(root)))
        for entry in parser.get("alembic", "version_locations", raw=True).split()
    }
    folders = {path for path in (root / "migrations/versions").iterdir() if path.is_dir()}
    assert listed == {path for path in folders if not path.name.startswith("__")}


async def test_addresses_made_before_etags_start_at_revision_one(tmp_path):
    """customers_0003 gives the addresses that already exist a revision (an etag)."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'before_etags.db'}"
    await asyncio.to_thread(upgrade, url, "customers_0002")
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.begin() as connection:
            for statement in (
                "INSERT INTO stores (id, name, is_active, created_at)"
                " VALUES (1, 's', 1, '2026-01-01 00:00:00')",
                "INSERT INTO customers VALUES (1, 1, 'C-1', 'a@example.com', 'a@example.com',"
                " NULL, '', '', '', 0, '', 1, 1, '2026-01-01 00:00:00', '2026-01-01 00:00:00')",
                "INSERT INTO customer_addresses VALUES (1, 5, 1, 'Ann', 'Main St 1', '', 'Berlin',"
                " '', '', 'DE', '', 0, 0, '2026-01-01 00:00:00', '2026-01-01 00:00:00')",
            ):
                await connection.execute(text(statement))
        await asyncio.to_thread(upgrade, url, "heads")
        async with engine.connect() as connection:
            revisions = await connection.execute(text("SELECT revision FROM customer_addresses"))
            assert revisions.scalars().all() == [1]
    finally:
        await engine.dispose()


async def test_order_statistics_are_backfilled_from_the_orders_there_are(database_url, tmp_path):
    """orders_0004 fills customer_order_stats from the orders placed before it, a few
    customers at a time (a batch of 2 here: several per store), to exactly what the
    aggregate of the orders says: cancelled and guest orders not counted, a customer
    whose orders are all cancelled without a row."""
    url = await _scratch_database(database_url, tmp_path)
    await asyncio.to_thread(upgrade, url, "heads")
    await asyncio.to_thread(command.downgrade, alembic_config(url), "orders_0003")
    engine = create_engine(url, pool_size=1)
    statuses = ["pending", "paid", "shipped", "delivered", "cancelled"]
    start = datetime(2026, 1, 1, tzinfo=UTC)
    stores, customers = (1, 2), range(1, 8)
    try:
        async with engine.begin() as connection:
            for store_id in stores:
                await connection.execute(
                    insert(Store.__table__),
                    {
                        "id": store_id,
                        "name": f"s{store_id}",
                        "is_active": True,
                        "created_at": start,
                    },
                )
                await connection.execute(
                    insert(Customer.__table__),
                    [_customer(store_id, customer_id, start) for customer_id in customers],
                )
                orders = [
                    {
                        "store_id": store_id,
                        "order_id": order_id,
                        "order_number": f"O-{order_id}",
                        # Customer 7 places none; guests every ninth.
                        "customer_id": None if order_id % 9 == 0 else 1 + order_id * store_id % 6,
                        # Customer 6's are all cancelled in store 1.
                        "status": "cancelled"
                        if store_id == 1 and 1 + order_id % 6 == 6
                        else statuses[order_id * 7 % 5],
                        "currency_code": ("EUR", "USD", "JPY")[order_id % 3],
                        "total_minor": order_id * 101 % 997,
                        "contact_email": "",
                        "created_at": start + timedelta(minutes=order_id * 37 % 100),
                        "updated_at": start,
                    }
                    for order_id in range(1, 61)
                ]
                await connection.execute(insert(Order.__table__), orders)
        config = alembic_config(url)
        config.attributes["orders_stats_backfill_customers"] = 2
        await asyncio.to_thread(command.upgrade, config, "heads")
        database = TenantDatabase(engine)
        counted = 0
        for store_id in stores:
            for customer_id in customers:
                async with database.reading(store_id) as uow:
                    kept = await order_queries.customer_order_stats(uow, customer_id)
                    assert kept == await order_queries.aggregated_order_stats(uow, customer_id)
                    counted += kept.total_orders
        assert 0 < counted < 2 * 60
        await asyncio.to_thread(command.downgrade, alembic_config(url), "orders_0003")
        async with engine.connect() as connection:
            tables = await connection.run_sync(lambda sync: set(inspect(sync).get_table_names()))
        assert "customer_order_stats" not in tables
    finally:
        await engine.dispose()
        await _drop_scratch(url)


def _customer(store_id: int, customer_id: int, at: datetime) -> dict[str, object]:
    email = f"c{customer_id}@example.com"
    return {
        "store_id": store_id,
        "customer_id": customer_id,
        "customer_number": f"C-{customer_id}",
        "email": email,
        "email_key": email,
        "first_name": "",
        "last_name": "",
        "phone": "",
        "marketing_consent": False,
        "preferred_language": "",
        "is_active": True,
        "revision": 1,
        "created_at": at,
        "updated_at": at,
    }


async def _scratch_database(database_url: str, tmp_path: Path) -> str:
    """An empty database of the backend of `database_url`, of this test's own."""
    if make_url(database_url).get_backend_name() == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'scratch.db'}"
    name = f"commerce_scratch_{uuid.uuid4().hex[:10]}"
    connection = await asyncpg.connect(_admin_dsn())
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    return make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)


async def _drop_scratch(url: str) -> None:
    if make_url(url).get_backend_name() == "sqlite":
        return
    connection = await asyncpg.connect(_admin_dsn())
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')
    finally:
        await connection.close()


def _admin_dsn() -> str:
    admin = make_url(POSTGRES_URL).set(drivername="postgresql")
    return admin.render_as_string(hide_password=False)
