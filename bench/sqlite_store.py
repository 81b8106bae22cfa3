"""The benchmark's SQLite store: what `scripts/serve` runs on (`commerce serve` with a
SQLite file), seeded with the same shape as the PostgreSQL store at a moderate size.

bench.seed makes its rows with PostgreSQL's set-based SQL; rather than a second
generator for SQLite, the store is seeded into a scratch PostgreSQL database by that
same code and copied row for row into a SQLite file that `commerce migrate` set up:
every table's rows of the store, whatever tables the migrations have made by then
(so a table added later is copied too). The file is kept next to the PostgreSQL
store's description (.bench/) and reused by later runs of the same size."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import MetaData, create_engine, text

from bench import servers
from bench.seed import SeededStore, seed_store
from bench.urls import asyncpg_dsn

# Rows a statement inserts into SQLite: bounds the memory of one copy step.
COPY_CHUNK = 20_000


def sqlite_url(path: Path) -> str:
    """The URL the suite serves the file with (the default driver of `scripts/serve`)."""
    return f"sqlite+aiosqlite:///{path}"


def _migrate(url: str) -> None:
    subprocess.run(  # noqa: S603 - our own command
        [servers.COMMERCE, "migrate"],
        env=servers.environment(DATABASE_URL=url),
        check=True,
        cwd=servers.ROOT,
    )


async def _admin(url: str, statement: str) -> None:
    base, _, _ = asyncpg_dsn(url).rpartition("/")
    admin = await asyncpg.connect(f"{base}/postgres")
    try:
        await admin.execute(statement)
    finally:
        await admin.close()


async def _copy(scratch: str, path: Path, store_id: int) -> dict[str, int]:
    """Every row of the store in the scratch database, into the migrated SQLite file,
    a chunk at a time; returns the rows copied by table."""
    engine = create_engine(f"sqlite:///{path}")
    metadata = MetaData()
    metadata.reflect(engine)
    copied: dict[str, int] = {}
    source = await asyncpg.connect(asyncpg_dsn(scratch))
    try:
        with engine.begin() as sqlite:
            for table in metadata.sorted_tables:  # parents before children
                column = "id" if table.name == "stores" else "store_id"
                if column not in table.c:
                    continue
                query = f'SELECT * FROM "{table.name}" WHERE "{column}" = $1'  # noqa: S608 - our names
                copied[table.name] = 0
                async with source.transaction():  # a cursor lives in a transaction
                    cursor = await source.cursor(query, store_id)
                    while rows := await cursor.fetch(COPY_CHUNK):
                        sqlite.execute(table.insert(), [dict(row) for row in rows])
                        copied[table.name] += len(rows)
            # The planner's statistics, as the PostgreSQL store's VACUUM ANALYZE gives.
            sqlite.execute(text("ANALYZE"))
    finally:
        await source.close()
        engine.dispose()
    return copied


def prepared_sqlite_store(
    postgres_url: str,
    *,
    customers: int,
    orders: int,
    big_customer_orders: int,
    password_hash: Callable[[], str],
    reseed: bool,
) -> tuple[str, SeededStore, dict[str, Any]]:
    """The SQLite store's URL, its description and its size (rows by table, file
    size): reused when a file of this size exists, else seeded now through a scratch
    database beside `postgres_url` (dropped after)."""
    name = postgres_url.rsplit("/", 1)[1]
    folder = servers.ROOT / ".bench"
    folder.mkdir(exist_ok=True)
    path = folder / f"{name}-sqlite.db"
    remembered = folder / f"{name}-sqlite.json"
    if remembered.exists() and path.exists() and not reseed:
        known = json.loads(remembered.read_text())
        store = SeededStore(**known["store"])
        if store.customers == customers and store.orders == orders:
            print(f"reusing SQLite store {path}", flush=True)
            return sqlite_url(path), store, known["size"]
    for stale in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        stale.unlink(missing_ok=True)
    scratch = postgres_url + "_sqlite_seed"
    scratch_name = scratch.rsplit("/", 1)[1]
    asyncio.run(_admin(scratch, f'DROP DATABASE IF EXISTS "{scratch_name}" WITH (FORCE)'))
    asyncio.run(_admin(scratch, f'CREATE DATABASE "{scratch_name}"'))
    try:
        _migrate(scratch)
        store = asyncio.run(
            seed_store(
                scratch,
                customers=customers,
                orders=orders,
                big_customer_orders=big_customer_orders,
                password_hash=password_hash(),
            )
        )
        _migrate(sqlite_url(path))
        rows = asyncio.run(_copy(scratch, path, store.store_id))
    finally:
        asyncio.run(_admin(scratch, f'DROP DATABASE IF EXISTS "{scratch_name}" WITH (FORCE)'))
    size = {"rows": rows, "file_mb": round(path.stat().st_size / 2**20, 1)}
    remembered.write_text(json.dumps({"store": asdict(store), "size": size}))
    print(f"seeded SQLite store {path} ({size['file_mb']} MB)", flush=True)
    return sqlite_url(path), store, size
