"""Bulk-loads a benchmark store into a PostgreSQL database that `commerce migrate`
already set up: a new store, its customers, their orders and the orders' line items.

Every row is made by the database itself (INSERT ... SELECT ... FROM generate_series),
so a million customers and five million orders load in minutes: nothing crosses the
wire row by row. The values come from a hash of the row's id rather than from
random(), so two statements can compute the same thing independently (an order's
total in the orders statement equals the sum of its lines in the line items
statement) and every run of the seeder makes the same data.

What it makes, and why it looks that way:

- customers 1..N, numbered and created in id order like the service does; all share
  one password hash (bcrypt is far too slow to hash a million passwords);
- orders 1..M, created over the past two years in id order, each placed by a customer
  who existed by then; one "big" customer places K of them, spread over the whole
  range, so its history and statistics read K index entries; about 0.5% are guest
  orders; statuses are spread over all five, currencies are mostly EUR, some USD;
- one or two line items per order, whose totals add up to the order's total;
- each customer's order statistics (customer_order_stats), aggregated from them;
- the store's counters at the largest ids, so creates through the server go on after.

Usage: python -m bench.seed --database-url URL --customers N --orders M
--big-customer-orders K [--bcrypt-rounds 12]; prints the SeededStore as JSON."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import bcrypt

from bench.urls import asyncpg_dsn

# The password of every seeded customer, for login benchmarks. Public on purpose: it
# only ever guards throwaway benchmark data.
BENCH_PASSWORD = "bench-password-1"  # noqa: S105

# Rows per INSERT statement. Each statement queues one foreign-key check per row in
# memory until it ends; this bounds that queue, and gives progress lines.
CHUNK_ROWS = 500_000

# The big customer is the first one: the oldest account, so it existed before every
# order it places.
BIG_CUSTOMER_ID = 1

CUSTOMER_SPAN = timedelta(days=3 * 365)
ORDER_SPAN = timedelta(days=2 * 365)

# Where among the customers to look for the typical one: past the oldest (who placed
# the most orders) and before the newest (who placed hardly any).
TYPICAL_CANDIDATE_AT = 0.4
TYPICAL_CANDIDATES = 200

# Helpers for the statements below, made for this session only (pg_temp), so nothing
# of the seeder stays in the database. They are single-expression SQL functions, which
# PostgreSQL inlines into the calling query: they cost no function call per row.
#
# bench_pick: a value in [0, modulus) that looks random but is a pure function of the
# key and the salt; each salt gives an independent-looking stream. Clearing the sign
# bit (rather than abs()) cannot overflow, and uses `modulus` once, which inlining
# needs when the argument is an expression.
_HELPERS = (
    """
    CREATE FUNCTION pg_temp.bench_pick(key bigint, salt integer, modulus bigint)
    RETURNS bigint LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT (hashint8extended(key, salt) & 9223372036854775807) % modulus $$
    """,
    # 40% of the orders have two lines, the others one.
    """
    CREATE FUNCTION pg_temp.bench_line_count(order_id bigint)
    RETURNS integer LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT CASE WHEN pg_temp.bench_pick(order_id, 30, 5) < 2 THEN 2 ELSE 1 END $$
    """,
    # One of 500 products; a product has one price, as in a real catalogue.
    """
    CREATE FUNCTION pg_temp.bench_line_product(order_id bigint, line integer)
    RETURNS bigint LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT 1 + pg_temp.bench_pick(order_id, 20 + line, 500) $$
    """,
    """
    CREATE FUNCTION pg_temp.bench_unit_price(product bigint)
    RETURNS bigint LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT 199 + (product * 7919) % 19800 $$
    """,
    """
    CREATE FUNCTION pg_temp.bench_line_quantity(order_id bigint, line integer)
    RETURNS integer LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT 1 + pg_temp.bench_pick(order_id, 10 + line, 3)::integer $$
    """,
    # The order total is the sum of these: both INSERTs call the same functions.
    """
    CREATE FUNCTION pg_temp.bench_line_total(order_id bigint, line integer)
    RETURNS bigint LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT pg_temp.bench_line_quantity(order_id, line)
                 * pg_temp.bench_unit_price(pg_temp.bench_line_product(order_id, line)) $$
    """,
    """
    CREATE FUNCTION pg_temp.bench_order_total(order_id bigint)
    RETURNS bigint LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT pg_temp.bench_line_total(order_id, 1)
                 + CASE WHEN pg_temp.bench_line_count(order_id) = 2
                        THEN pg_temp.bench_line_total(order_id, 2) ELSE 0 END $$
    """,
)

_INSERT_STORE = """
INSERT INTO stores (name, is_active, created_at) VALUES ($1, true, $2) RETURNING id
"""

# $1 store, $2..$3 the id range, $4 the password hash, $5 the first customer's time,
# $6 seconds between two customers. Numbers are formatted as customer_number() in
# services/customers/service.py does (f"C-{id:06d}": at least six digits, never cut).
# The email is already lower-case, so it is its own email_key. revision 1 means
# "never changed", so updated_at is created_at.
_INSERT_CUSTOMERS = """
INSERT INTO customers (
    store_id, customer_id, customer_number, email, email_key, hashed_password,
    first_name, last_name, phone, marketing_consent, preferred_language,
    is_active, revision, created_at, updated_at
)
SELECT
    $1, n,
    'C-' || lpad(n::text, greatest(6, length(n::text)), '0'),
    'c' || n || '@bench.example',
    'c' || n || '@bench.example',
    $4,
    (ARRAY['Anna', 'Ben', 'Clara', 'David', 'Emma', 'Felix', 'Greta', 'Hugo', 'Ida',
           'Jonas', 'Klara', 'Leon', 'Mia', 'Noah', 'Olivia', 'Paul', 'Rosa', 'Samuel',
           'Tilda', 'Yusuf'])[1 + pg_temp.bench_pick(n, 101, 20)::integer],
    (ARRAY['Meyer', 'Schmidt', 'Dubois', 'Rossi', 'Jansen', 'Nowak', 'Garcia', 'Smith',
           'Andersen', 'Kowalski', 'Martin', 'Bauer', 'Weber', 'Moreau', 'Bianchi',
           'de Vries', 'Fischer', 'Lopez', 'Novak', 'Brown'])
        [1 + pg_temp.bench_pick(n, 102, 20)::integer],
    CASE WHEN pg_temp.bench_pick(n, 103, 4) = 0 THEN ''
         ELSE '+49 30 ' || lpad(pg_temp.bench_pick(n, 104, 10000000)::text, 7, '0') END,
    pg_temp.bench_pick(n, 105, 10) < 4,
    (ARRAY['', 'en', 'de', 'fr', 'nl', 'en-GB', 'es'])
        [1 + pg_temp.bench_pick(n, 106, 7)::integer],
    true, 1, t.created_at, t.created_at
FROM generate_series($2::bigint, $3::bigint) AS n,
     LATERAL (SELECT $5::timestamptz + (($6::float8 * (n::float8 - 0.5)) * interval '1 second')
                     AS created_at) AS t
"""

# $1 store, $2..$3 the id range, $4 customers, $5 orders, $6 the big customer's
# orders, $7 the big customer, $8 the first order's time, $9 seconds between two
# orders, $10 seconds from the first customer to the first order, $11 seconds between
# two customers, $12 now.
#
# Order o is the big customer's when floor(o*K/M) steps up at o: exactly K orders,
# evenly spread. Any other order (bar the guests) goes to one of the customers created
# by its time (`known`), never the big one, so no order predates its customer and old
# customers have more orders than new ones. Numbers are formatted as order_number()
# in services/orders/service.py does. updated_at is when the order reached its
# status, never in the future.
_INSERT_ORDERS = """
INSERT INTO orders (
    store_id, order_id, order_number, customer_id, status, currency_code, total_minor,
    contact_email, created_at, updated_at
)
SELECT
    $1, p.o,
    'O-' || lpad(p.o::text, greatest(6, length(p.o::text)), '0'),
    p.customer_id, p.status,
    CASE WHEN pg_temp.bench_pick(p.o, 3, 10) < 8 THEN 'EUR' ELSE 'USD' END,
    pg_temp.bench_order_total(p.o),
    CASE WHEN p.customer_id IS NULL THEN 'guest' || p.o || '@bench.example' ELSE '' END,
    p.created_at,
    least($12::timestamptz, p.created_at + CASE p.status
        WHEN 'pending' THEN interval '0'
        WHEN 'paid' THEN interval '20 minutes'
        WHEN 'shipped' THEN interval '1 day 4 hours'
        WHEN 'delivered' THEN interval '3 days 6 hours'
        ELSE interval '5 hours' END)
FROM (
    SELECT
        r.o,
        r.created_at,
        CASE
            WHEN (r.o * $6::bigint) / $5::bigint <> ((r.o - 1) * $6::bigint) / $5::bigint
                THEN $7::bigint
            WHEN pg_temp.bench_pick(r.o, 1, 200) = 0 THEN NULL
            ELSE 2 + pg_temp.bench_pick(r.o, 2, r.known - 1)
        END AS customer_id,
        CASE
            WHEN r.status_roll < 10 THEN 'pending'
            WHEN r.status_roll < 25 THEN 'paid'
            WHEN r.status_roll < 40 THEN 'shipped'
            WHEN r.status_roll < 90 THEN 'delivered'
            ELSE 'cancelled'
        END AS status
    FROM (
        SELECT
            o,
            $8::timestamptz + (($9::float8 * o) * interval '1 second') AS created_at,
            least($4::bigint, greatest(2, floor(
                ($10::float8 + $9::float8 * o) / $11::float8 + 0.5)::bigint)) AS known,
            pg_temp.bench_pick(o, 4, 100) AS status_roll
        FROM generate_series($2::bigint, $3::bigint) AS o
    ) AS r
) AS p
"""

# $1 store, $2..$3 the order id range. The same helpers as the orders' totals.
_INSERT_LINE_ITEMS = """
INSERT INTO order_line_items (
    store_id, order_id, line_number, sku, name, quantity, unit_price_minor, line_total_minor
)
SELECT
    $1, l.o, l.line,
    'SKU-' || lpad(l.product::text, 5, '0'),
    'Bench product ' || l.product,
    l.quantity,
    pg_temp.bench_unit_price(l.product),
    pg_temp.bench_line_total(l.o, l.line)
FROM (
    SELECT o, line,
           pg_temp.bench_line_product(o, line) AS product,
           pg_temp.bench_line_quantity(o, line) AS quantity
    FROM generate_series($2::bigint, $3::bigint) AS o,
         LATERAL generate_series(1, pg_temp.bench_line_count(o)) AS line
) AS l
"""

# $1 store, $2..$3 the customer id range: the statistics the orders module keeps
# (services/orders/queries.py), aggregated from the orders just loaded, so a seeded
# store's statistics are exact; 16 is services.orders.models.STATISTICS_SLOTS.
_INSERT_STATISTICS = """
INSERT INTO customer_order_stats (
    store_id, customer_id, currency_code, slot, order_count, total_minor, first_order_at,
    last_order_at
)
SELECT $1, customer_id, currency_code, order_id % 16, count(*), sum(total_minor),
       min(created_at), max(created_at)
FROM orders
WHERE store_id = $1 AND customer_id BETWEEN $2 AND $3 AND status <> 'cancelled'
GROUP BY customer_id, currency_code, order_id % 16
"""

# The counters services/core/stores.py next_store_number() reads: "customer" and
# "customer_address" (services/customers/service.py), "order"
# (services/orders/service.py). No addresses are seeded: their counter starts at 0.
_INSERT_COUNTERS = """
INSERT INTO store_counters (store_id, name, value)
VALUES ($1, 'customer', $2), ($1, 'order', $3), ($1, 'customer_address', 0)
ON CONFLICT (store_id, name) DO UPDATE SET value = greatest(store_counters.value, EXCLUDED.value)
"""

# Each candidate's order count, read from ix_orders_customer.
_CANDIDATE_ORDER_COUNTS = """
SELECT c.id, (SELECT count(*) FROM orders
              WHERE orders.store_id = $1 AND orders.customer_id = c.id) AS orders
FROM unnest($2::bigint[]) AS c(id)
ORDER BY c.id
"""

_CUSTOMER_EMAIL = "SELECT email FROM customers WHERE store_id = $1 AND customer_id = $2"

# VACUUM sets the visibility map, without which the statistics aggregate cannot read
# ix_orders_customer alone (index-only scan), and ANALYZE gives the planner the new
# row counts. Both run after the commit: VACUUM cannot run inside a transaction.
_MAINTENANCE = (
    "VACUUM (ANALYZE) customers",
    "VACUUM (ANALYZE) orders",
    "VACUUM (ANALYZE) order_line_items",
    "VACUUM (ANALYZE) customer_order_stats",
    "ANALYZE stores",
    "ANALYZE store_counters",
)


@dataclass(frozen=True)
class SeededStore:
    """What a benchmark needs to know about the store it loaded."""

    store_id: int
    # Holds `big_customer_orders` of the orders.
    big_customer_id: int
    # An ordinary customer with a few orders.
    typical_customer_id: int
    # A customer whose password is the one hashed into `password_hash` (every seeded
    # customer has it; this one is the typical customer).
    login_email: str
    customers: int
    orders: int


def _check_sizes(customers: int, orders: int, big_customer_orders: int) -> None:
    if customers < 2:
        # The big customer and at least one ordinary one.
        raise ValueError("customers must be at least 2")
    if orders < 0 or not 0 <= big_customer_orders <= orders:
        raise ValueError("need 0 <= big_customer_orders <= orders")


def _chunks(total: int) -> list[tuple[int, int]]:
    """Inclusive id ranges 1..total, CHUNK_ROWS at a time."""
    return [(low, min(low + CHUNK_ROWS - 1, total)) for low in range(1, total + 1, CHUNK_ROWS)]


async def seed_store(
    database_url: str,
    *,
    customers: int,
    orders: int,
    big_customer_orders: int,
    password_hash: str,
    progress: Callable[[str], None] | None = None,
) -> SeededStore:
    """Loads a new store into the migrated database at `database_url` and describes
    it. All of the store's rows are one transaction: a failure leaves nothing behind.
    `progress`, when given, is told what was done and how long it took."""
    _check_sizes(customers, orders, big_customer_orders)
    began = time.monotonic()

    def report(what: str) -> None:
        if progress is not None:
            progress(f"{time.monotonic() - began:8.1f}s {what}")

    # One clock for every time of the store, so orders follow their customers exactly.
    now = datetime.now(UTC)
    customers_start = now - CUSTOMER_SPAN
    orders_start = now - ORDER_SPAN
    customer_step = CUSTOMER_SPAN.total_seconds() / customers
    order_step = ORDER_SPAN.total_seconds() / (orders + 1)
    order_lead = (orders_start - customers_start).total_seconds()

    connection = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        for helper in _HELPERS:
            await connection.execute(helper)
        async with connection.transaction():
            store_id = int(
                await connection.fetchval(_INSERT_STORE, f"bench {now:%Y-%m-%d %H:%M:%S}", now)
            )
            for low, high in _chunks(customers):
                await connection.execute(
                    _INSERT_CUSTOMERS,
                    store_id,
                    low,
                    high,
                    password_hash,
                    customers_start,
                    customer_step,
                )
                report(f"customers {high:,}/{customers:,}")
            for low, high in _chunks(orders):
                await connection.execute(
                    _INSERT_ORDERS,
                    store_id,
                    low,
                    high,
                    customers,
                    orders,
                    big_customer_orders,
                    BIG_CUSTOMER_ID,
                    orders_start,
                    order_step,
                    order_lead,
                    customer_step,
                    now,
                )
                await connection.execute(_INSERT_LINE_ITEMS, store_id, low, high)
                report(f"orders and their lines {high:,}/{orders:,}")
            for low, high in _chunks(customers):
                await connection.execute(_INSERT_STATISTICS, store_id, low, high)
                report(f"order statistics of customers {high:,}/{customers:,}")
            await connection.execute(_INSERT_COUNTERS, store_id, customers, orders)
            typical_customer_id = await _typical_customer(
                connection, store_id, customers, orders - big_customer_orders
            )
            login_email = str(
                await connection.fetchval(_CUSTOMER_EMAIL, store_id, typical_customer_id)
            )
        report("committed")
        for statement in _MAINTENANCE:
            await connection.execute(statement)
        report("vacuumed and analyzed")
    finally:
        await connection.close()
    return SeededStore(
        store_id=store_id,
        big_customer_id=BIG_CUSTOMER_ID,
        typical_customer_id=typical_customer_id,
        login_email=login_email,
        customers=customers,
        orders=orders,
    )


async def _typical_customer(
    connection: asyncpg.Connection[Any], store_id: int, customers: int, other_orders: int
) -> int:
    """An ordinary customer whose order count is nearest the mean of the ordinary
    customers (at least one order when anyone has one): the "typical" case next to
    the big customer."""
    first = max(BIG_CUSTOMER_ID + 1, int(customers * TYPICAL_CANDIDATE_AT))
    candidates = list(range(first, min(customers, first + TYPICAL_CANDIDATES - 1) + 1))
    rows = await connection.fetch(_CANDIDATE_ORDER_COUNTS, store_id, candidates)
    mean = max(1, round(other_orders / (customers - 1)))
    best = min(rows, key=lambda row: (abs(int(row["orders"]) - mean), int(row["id"])))
    return int(best["id"])


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.seed",
        description="Load a benchmark store into a database migrated by `commerce migrate` "
        "and print what it made as JSON. Every customer's password is "
        f"{BENCH_PASSWORD!r}.",
    )
    parser.add_argument(
        "--database-url",
        required=True,
        help="postgresql:// or postgresql+asyncpg:// URL of the migrated database",
    )
    parser.add_argument("--customers", type=int, required=True, help="customers to create")
    parser.add_argument("--orders", type=int, required=True, help="orders to create")
    parser.add_argument(
        "--big-customer-orders",
        type=int,
        required=True,
        help="how many of the orders the big customer places",
    )
    parser.add_argument(
        "--bcrypt-rounds",
        type=int,
        default=12,
        help="bcrypt cost of the customers' password hash (default 12, the server's)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress lines on standard error")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        _check_sizes(args.customers, args.orders, args.big_customer_orders)
        asyncpg_dsn(args.database_url)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    password_hash = bcrypt.hashpw(
        BENCH_PASSWORD.encode(), bcrypt.gensalt(args.bcrypt_rounds)
    ).decode("ascii")

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    seeded = asyncio.run(
        seed_store(
            args.database_url,
            customers=args.customers,
            orders=args.orders,
            big_customer_orders=args.big_customer_orders,
            password_hash=password_hash,
            progress=None if args.quiet else progress,
        )
    )
    print(json.dumps(dataclasses.asdict(seeded)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
