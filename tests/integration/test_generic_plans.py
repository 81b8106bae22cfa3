"""Every fixed statement's plan is safe whatever the planner believes of the tables.

asyncpg prepares each statement once per connection, and after a few calls PostgreSQL
may keep one generic plan for it, made from the statistics of that moment. A plan
made while a store was nearly empty once walked every line of the store, and every
order for each of them, on every ListCustomerOrders call: quadratic in the store's
orders, and nothing re-plans it short of an ANALYZE or a restart.

So each statement's generic plan is checked against a store of tens of thousands of
orders, with the statistics taken while the tables were empty (as a new database
has them) or while they held one small store. A plan fails when it reads a store's
rows by `store_id` alone: a sequential scan of a store-owned table, or an index scan
whose condition names no other column, unless a LIMIT right above it ends the scan
early (the first page of a store-wide listing)."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager
from types import ModuleType
from typing import Any

import asyncpg
import pytest
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
from sqlalchemy.engine import make_url

from services.core.db import counters, idempotency, stores, unit_of_work
from services.core.db.engine import Base, create_engine
from services.core.db.statements import Statement
from services.customers import queries as customer_queries
from services.loyalty import queries as loyalty_queries
from services.migrations import upgrade
from services.orders import queries as order_queries
from tests.conftest import BACKENDS, POSTGRES_URL

pytestmark = pytest.mark.skipif(
    "postgresql" not in BACKENDS, reason="generic plans are PostgreSQL's"
)

STATEMENT_MODULES: tuple[ModuleType, ...] = (
    customer_queries,
    order_queries,
    loyalty_queries,
    idempotency,
    counters,
    stores,
    unit_of_work,
)

# Enough rows that a wrong plan costs what it would in production, few enough to
# load in a few seconds.
CUSTOMERS, ORDERS = 20_000, 50_000

STORE_TABLES = {
    name: [column.name for column in table.c if column.name != "store_id"]
    for name, table in Base.metadata.tables.items()
    if "store_id" in table.c
}
STORE_INDEXES = {
    index.name: table for table in STORE_TABLES for index in Base.metadata.tables[table].indexes
} | {
    constraint.name: table
    for table in STORE_TABLES
    for constraint in Base.metadata.tables[table].constraints
    if constraint.name
}


def fixed_statements() -> Iterator[tuple[str, Statement]]:
    """Every Statement the modules build at import, PostgreSQL's where a statement
    is written per dialect."""
    for module in STATEMENT_MODULES:
        for name, value in vars(module).items():
            yield from _statements(f"{module.__name__}.{name}", value)


def _statements(name: str, value: object) -> Iterator[tuple[str, Statement]]:
    """`value` if it is a Statement, else those of a mapping (by dialect, by filters,
    or both, nested), but SQLite's."""
    if isinstance(value, Statement):
        yield name, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if key != "sqlite":
                yield from _statements(f"{name}[{key}]", item)


def test_the_statements_are_found() -> None:
    names = {name for name, _ in fixed_statements()}
    assert "services.orders.queries._PAGE_LINES[postgresql]" in names
    assert sum(".orders.queries._ORDER_PAGES" in name for name in names) == 48
    assert len(names) > 60


def scans_by_store_alone(node: Mapping[str, Any], parent: str = "") -> Iterator[str]:
    """The scans of a plan that read a store's rows by `store_id` alone."""
    kind = node["Node Type"]
    table = node.get("Relation Name") or STORE_INDEXES.get(node.get("Index Name", ""))
    if table in STORE_TABLES:
        other_columns = STORE_TABLES[table]
        condition = node.get("Index Cond", "")
        narrowed = any(re.search(rf"\b{column}\b", condition) for column in other_columns)
        index_scan = kind.endswith("Index Scan") or kind == "Index Only Scan"
        if kind == "Seq Scan":
            yield f"Seq Scan on {table}"
        elif index_scan and not narrowed and parent != "Limit":
            yield f"{kind} on {node['Index Name']} by {condition or 'nothing'}"
    for child in node.get("Plans", ()):
        yield from scans_by_store_alone(child, kind)


def plan_of(explained: str | list[Any]) -> Any:
    """The plan of EXPLAIN (FORMAT JSON): text, or decoded where SQLAlchemy's
    connections decode JSON."""
    return (json.loads(explained) if isinstance(explained, str) else explained)[0]["Plan"]


async def generic_plan(connection: asyncpg.Connection[Any], statement: Statement) -> Any:
    sql, names, _ = statement.for_asyncpg(PGDialect_asyncpg())
    name = f"s_{uuid.uuid4().hex[:8]}"
    await connection.execute(f"PREPARE {name} AS {sql}")
    try:
        nulls = ", ".join("NULL" for _ in names)
        arguments = f"({nulls})" if names else ""
        return plan_of(
            await connection.fetchval(f"EXPLAIN (FORMAT JSON) EXECUTE {name}{arguments}")
        )
    finally:
        await connection.execute(f"DEALLOCATE {name}")


def _dsn(database: str) -> str:
    url = make_url(POSTGRES_URL).set(drivername="postgresql", database=database)
    return url.render_as_string(hide_password=False)


# Every store-owned table, filled by the database itself: $1 the store. Customer 1
# places one order in every {customers}; every order has two lines. Plain INSERT ...
# SELECT, with no function of its own: creating one would make PostgreSQL drop every
# cached plan, which the growing-store test relies on.
_FILL_STORE = (
    """INSERT INTO customers SELECT $1, c, 'C' || c, 'c' || c || '@example.com',
        'c' || c || '@example.com', NULL, 'First', 'Last', '', false, '', true, 1,
        now() - ({customers} - c) * interval '1 minute', now()
    FROM generate_series(1, {customers}) AS c""",
    """INSERT INTO orders SELECT $1, o, 'O' || o, 1 + o % {customers}, 'paid', 'EUR', 1000, '',
        now() - ({orders} - o) * interval '1 second', now()
    FROM generate_series(1, {orders}) AS o""",
    """INSERT INTO customer_order_stats SELECT $1, customer_id, currency_code, order_id % 16,
        count(*), sum(total_minor), min(created_at), max(created_at)
    FROM orders WHERE store_id = $1 GROUP BY customer_id, currency_code, order_id % 16""",
    """INSERT INTO order_line_items SELECT $1, o, l, 'SKU', 'Item', 1, 500, 500
    FROM generate_series(1, {orders}) AS o, generate_series(1, 2) AS l""",
    """INSERT INTO order_revisions SELECT $1, o, 2, 'paid', '', '', now()
    FROM generate_series(1, {orders}) AS o""",
    """INSERT INTO customer_addresses SELECT $1, c * 2 + a, c, 'Recipient', 'Line 1', '',
        'City', '', '', 'DE', '', a = 0, a = 0, now(), now()
    FROM generate_series(1, {customers}) AS c, generate_series(0, 1) AS a""",
    """INSERT INTO loyalty_accounts SELECT $1, c, 10, 10, now()
    FROM generate_series(1, {customers}) AS c""",
    """INSERT INTO loyalty_movements SELECT $1, c * 2 + m, c, 5, 5 * (m + 1), 'reason', now()
    FROM generate_series(1, {customers}) AS c, generate_series(0, 1) AS m""",
    """INSERT INTO idempotency_keys SELECT $1, 'CreateOrder', md5(c || '-' || k), md5(c::text),
        c, now() - k * interval '1 minute'
    FROM generate_series(1, {customers}) AS c, generate_series(0, 3) AS k""",
    """INSERT INTO customer_login_throttles SELECT $1, 'email:' || md5(c::text), 1,
        now() - c * interval '1 second'
    FROM generate_series(1, {customers}) AS c""",
    # One customer in ten has tag0, every customer one of tag0..tag9.
    """INSERT INTO customer_tags SELECT $1, 'tag' || (c % 10), c
    FROM generate_series(1, {customers}) AS c""",
)


async def _load_store(url: str, customers: int, orders: int) -> int:
    """Loads a new store of `customers` and `orders` without analyzing anything;
    returns its id."""
    connection = await asyncpg.connect(_dsn(make_url(url).database or ""))
    try:
        async with connection.transaction():
            store_id = int(
                await connection.fetchval(
                    "INSERT INTO stores (name, is_active, created_at)"
                    " VALUES ('plans', true, now()) RETURNING id"
                )
            )
            for statement in _FILL_STORE:
                sizes = {"customers": int(customers), "orders": int(orders)}
                await connection.execute(statement.format(**sizes), store_id)
    finally:
        await connection.close()
    return store_id


@asynccontextmanager
async def fresh_database() -> AsyncIterator[str]:
    """A new migrated database that autovacuum leaves alone, dropped after."""
    name = f"commerce_plans_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(_dsn(make_url(POSTGRES_URL).database or "postgres"))
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    try:
        await asyncio.to_thread(upgrade, url)
        connection = await asyncpg.connect(_dsn(name))
        try:
            for table in Base.metadata.tables:
                # Where autovacuum runs, it must not bring the statistics up to date.
                await connection.execute(f'ALTER TABLE "{table}" SET (autovacuum_enabled = false)')
        finally:
            await connection.close()
        yield url
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture(scope="module", params=["empty", "small"])
async def big_store_database(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """A database holding one big store, whose statistics the planner took while the
    tables were empty, or while they held one small store."""
    async with fresh_database() as url:
        if request.param == "small":
            await _load_store(url, customers=3, orders=5)
        connection = await asyncpg.connect(_dsn(make_url(url).database or ""))
        try:
            await connection.execute("ANALYZE")
        finally:
            await connection.close()
        await _load_store(url, CUSTOMERS, ORDERS)
        yield url


async def test_no_generic_plan_reads_a_store_by_store_id_alone(big_store_database: str) -> None:
    connection = await asyncpg.connect(_dsn(make_url(big_store_database).database or ""))
    try:
        await connection.execute("SET plan_cache_mode = force_generic_plan")
        unsafe = {}
        for name, statement in fixed_statements():
            found = list(scans_by_store_alone(await generic_plan(connection, statement)))
            if found:
                unsafe[name] = found
    finally:
        await connection.close()
    assert unsafe == {}


# Statements of the hottest calls, with what each needs beside the store's id.
GROWING_STORE_CALLS = {
    "GetCustomer": (customer_queries._GET_CUSTOMER, {"customer_id": 1}),
    "ListCustomerOrders": (
        order_queries._ORDER_PAGES[
            order_queries._Shape(False, order_queries._Customers.ONE, False, False), False
        ],
        {"customer_id": 1, "limit": 11},
    ),
    "a page's lines": (order_queries._PAGE_LINES["postgresql"], {"order_ids": [1, 2, 3]}),
}


async def test_the_servers_plans_follow_a_store_that_grows() -> None:
    """The statements run on the server's own connections while a store is tiny,
    often enough for PostgreSQL to settle on a plan; then the store grows, with
    nothing analyzing it. The plans of the next calls must fit the grown store."""
    async with fresh_database() as url:
        tiny_store = await _load_store(url, customers=50, orders=300)
        engine = create_engine(url, pool_size=1)
        try:
            pooled = await engine.raw_connection()
            connection = pooled.driver_connection
            assert connection is not None
            dialect = PGDialect_asyncpg()
            for name, (statement, params) in GROWING_STORE_CALLS.items():
                sql, arguments = statement.arguments(dialect, params | {"store_id": tiny_store})
                await connection.execute(f'PREPARE "{name}" AS {sql}')
                for _ in range(10):
                    await connection.fetch(f'EXECUTE "{name}"({_literals(arguments)})')
            big_store = await _load_store(url, CUSTOMERS, ORDERS)
            unsafe = {}
            for name, (statement, params) in GROWING_STORE_CALLS.items():
                _, arguments = statement.arguments(dialect, params | {"store_id": big_store})
                explained = await connection.fetchval(
                    f'EXPLAIN (FORMAT JSON) EXECUTE "{name}"({_literals(arguments)})'
                )
                if found := list(scans_by_store_alone(plan_of(explained))):
                    unsafe[name] = found
            pooled.close()
        finally:
            await engine.dispose()
    assert unsafe == {}


def _literals(arguments: list[Any]) -> str:
    """Integer and integer-list arguments as SQL literals, for EXECUTE."""
    return ", ".join(
        f"ARRAY{argument}::bigint[]" if isinstance(argument, list) else str(int(argument))
        for argument in arguments
    )
