"""The migrations build exactly the schema the models describe, on every backend."""

from __future__ import annotations

import asyncio
import configparser
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from services.core.db.engine import Base, create_engine
from services.migrations import alembic_config, upgrade


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
