"""The soak: a storefront's mixed load, for minutes, on a database that starts empty
and that nothing analyzes, reporting the throughput of every minute.

A short benchmark on a seeded, analyzed store cannot see what goes wrong as a store
grows under load: plans the database made while it was empty, an index missing for
a query that only gets slow past some size. Here 50 customers are all the store
holds at first; the load then creates orders all the time (a quarter of its calls)
while reading customers, lists of customers, customers' orders and their statistics.
With autovacuum off for the database's tables, the statistics stay those of the
empty tables for the whole run. A healthy server keeps its throughput; its worst
minute is reported against its first.

Usage: `scripts/bench soak [--minutes 10] [--database-url URL] [--output FILE]`
(`python -m bench.soak` without the benchmark's setup). The database named by
--database-url is created fresh and dropped after."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import multiprocessing
import os
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import grpc
from commerce.customers.v1 import customer_service_pb2 as customers_pb
from commerce.customers.v1 import customer_service_pb2_grpc as customers_grpc
from commerce.orders.v1 import customer_order_service_pb2 as history_pb
from commerce.orders.v1 import customer_order_service_pb2_grpc as history_grpc
from commerce.orders.v1 import order_service_pb2_grpc as orders_grpc
from sqlalchemy.engine import make_url

from bench import servers
from bench.loadgen import order_request
from bench.urls import asyncpg_dsn, sqlalchemy_url
from services.migrations import upgrade

CUSTOMERS = 50
CALLERS = 24  # calls in flight, over every load process
PROCESSES = 2
# Each call's share of the load, in order: the storefront the issue describes.
MIX = (
    ("GetCustomer", 0.40),
    ("CreateOrder", 0.25),
    ("ListCustomers", 0.10),
    ("ListCustomerOrders", 0.15),
    ("GetCustomerOrderStats", 0.10),
)
CALL_DEADLINE = 10.0


@dataclass(frozen=True)
class Plan:
    target: str
    store_id: int
    start_at: float
    minutes: float
    bucket_seconds: float
    concurrency: int


@dataclass
class Outcome:
    """Calls answered OK per bucket, and failures by status."""

    per_bucket: list[int]
    errors: dict[str, int] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)


def _buckets(plan: Plan) -> int:
    return max(1, round(plan.minutes * 60 / plan.bucket_seconds))


async def _drive(plan: Plan, process: int) -> Outcome:
    rng = random.Random(process)  # noqa: S311 - picks calls, guards nothing
    per_bucket = [0] * _buckets(plan)
    errors: Counter[str] = Counter()
    calls: Counter[str] = Counter()
    end = plan.start_at + plan.minutes * 60
    names = [name for name, _ in MIX]
    weights = [share for _, share in MIX]
    async with grpc.aio.insecure_channel(plan.target) as channel:
        customers = customers_grpc.CustomerServiceStub(channel)
        orders = orders_grpc.OrderServiceStub(channel)
        history = history_grpc.CustomerOrderServiceStub(channel)
        store = plan.store_id

        calls_by_name: dict[str, Callable[[int], Any]] = {
            "GetCustomer": lambda customer: customers.GetCustomer(
                customers_pb.GetCustomerRequest(store_id=store, customer_id=customer),
                timeout=CALL_DEADLINE,
            ),
            "CreateOrder": lambda customer: orders.CreateOrder(
                order_request(store, customer), timeout=CALL_DEADLINE
            ),
            "ListCustomers": lambda _: customers.ListCustomers(
                customers_pb.ListCustomersRequest(store_id=store, page_size=20),
                timeout=CALL_DEADLINE,
            ),
            "ListCustomerOrders": lambda customer: history.ListCustomerOrders(
                history_pb.ListCustomerOrdersRequest(
                    store_id=store, customer_id=customer, page_size=10
                ),
                timeout=CALL_DEADLINE,
            ),
            "GetCustomerOrderStats": lambda customer: history.GetCustomerOrderStats(
                history_pb.GetCustomerOrderStatsRequest(store_id=store, customer_id=customer),
                timeout=CALL_DEADLINE,
            ),
        }

        async def caller() -> None:
            while (now := time.time()) < end:
                name = rng.choices(names, weights)[0]
                calls[name] += 1
                try:
                    await calls_by_name[name](rng.randint(1, CUSTOMERS))
                except grpc.aio.AioRpcError as error:
                    errors[error.code().name] += 1
                    continue
                bucket = int((time.time() - plan.start_at) / plan.bucket_seconds)
                if now >= plan.start_at and bucket < len(per_bucket):
                    per_bucket[bucket] += 1

        await asyncio.sleep(max(0.0, plan.start_at - time.time()))
        await asyncio.gather(*(caller() for _ in range(plan.concurrency)))
    return Outcome(per_bucket, dict(errors), dict(calls))


def _run_process(plan: Plan, process: int) -> Outcome:
    return asyncio.run(_drive(plan, process))


def _load(plan: Plan, processes: int) -> Outcome:
    # Spawned, not forked: the parent has gRPC's threads by now (it probed the server),
    # and a child forked from them can hang on a lock one of them held.
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(processes, mp_context=spawn) as pool:
        outcomes = list(pool.map(_run_process, [plan] * processes, range(processes)))
    total = Outcome([0] * _buckets(plan))
    for outcome in outcomes:
        pairs = zip(total.per_bucket, outcome.per_bucket, strict=True)
        total.per_bucket = [mine + theirs for mine, theirs in pairs]
        total.errors = dict(Counter(total.errors) + Counter(outcome.errors))
        total.calls = dict(Counter(total.calls) + Counter(outcome.calls))
    return total


async def _create_database(url: str) -> int:
    """A new database with one store of CUSTOMERS customers and nothing else; returns
    the store's id."""
    name = make_url(url).database
    admin = await asyncpg.connect(asyncpg_dsn(str(make_url(url).set(database="postgres"))))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    await asyncio.to_thread(upgrade, url)
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        tables = await connection.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        )
        for table in tables:
            # Wherever autovacuum runs, it must not analyze these tables mid-run.
            await connection.execute(
                f'ALTER TABLE "{table["tablename"]}" SET (autovacuum_enabled = false)'
            )
        store_id = int(
            await connection.fetchval(
                "INSERT INTO stores (name, is_active, created_at)"
                " VALUES ('soak', true, now()) RETURNING id"
            )
        )
        await connection.execute(
            """INSERT INTO customers SELECT $1, c, 'C' || c, 'soak' || c || '@example.com',
                'soak' || c || '@example.com', NULL, 'Soak', 'Customer', '', false, '', true,
                1, now(), now()
            FROM generate_series(1, $2::bigint) AS c""",
            store_id,
            CUSTOMERS,
        )
    finally:
        await connection.close()
    return store_id


async def _drop_database(url: str) -> None:
    admin = await asyncpg.connect(asyncpg_dsn(str(make_url(url).set(database="postgres"))))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')
    finally:
        await admin.close()


@dataclass
class SoakReport:
    minutes: float
    bucket_seconds: float
    per_second: list[float]
    errors: dict[str, int]
    calls: dict[str, int]
    orders_at_end: int
    machine: dict[str, str]

    @property
    def worst_to_first(self) -> float:
        return min(self.per_second) / self.per_second[0] if self.per_second[0] else 0.0


def soak(url: str, minutes: float, bucket_seconds: float = 60.0) -> SoakReport:
    store_id = asyncio.run(_create_database(url))
    try:
        with tempfile.TemporaryDirectory(prefix="soak-") as logs:
            probe = (store_id, 1)
            with servers.suite(url, probe, Path(logs), bcrypt_rounds=4) as server:
                plan = Plan(
                    target=server.target,
                    store_id=store_id,
                    start_at=time.time() + 3,
                    minutes=minutes,
                    bucket_seconds=bucket_seconds,
                    concurrency=CALLERS // PROCESSES,
                )
                outcome = _load(plan, PROCESSES)
        orders = asyncio.run(_count_orders(url, store_id))
    finally:
        asyncio.run(_drop_database(url))
    return SoakReport(
        minutes=minutes,
        bucket_seconds=bucket_seconds,
        per_second=[count / bucket_seconds for count in outcome.per_bucket],
        errors=outcome.errors,
        calls=outcome.calls,
        orders_at_end=orders,
        machine={
            "cores": str(os.cpu_count()),
            "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        },
    )


async def _count_orders(url: str, store_id: int) -> int:
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        query = "SELECT count(*) FROM orders WHERE store_id = $1"
        return int(await connection.fetchval(query, store_id))
    finally:
        await connection.close()


HEADING = "## Soak: a mixed load on a store that starts empty"


def render(report: SoakReport) -> str:
    lines = [
        HEADING,
        "",
        f"{CALLERS} calls in flight for {report.minutes:g} minutes against one server"
        f" process, on a database that starts with {CUSTOMERS} customers and no order,"
        " with autovacuum off for its tables (so its statistics stay those of the empty"
        " tables). The mix: "
        + ", ".join(f"{round(share * 100)}% {name}" for name, share in MIX)
        + f". {report.orders_at_end:,} orders at the end; {report.machine['cores']} cores,"
        f" {report.machine['date']}.",
        "",
        "| window | calls/s | of the first |",
        "|---|---|---|",
    ]
    first = report.per_second[0] or 1.0
    for index, rate in enumerate(report.per_second):
        start = index * report.bucket_seconds
        window = f"{start:.0f} to {start + report.bucket_seconds:.0f} s"
        lines.append(f"| {window} | {rate:,.0f} | {rate / first:.0%} |")
    errors = ", ".join(f"{code} {count}" for code, count in sorted(report.errors.items()))
    lines += [
        "",
        f"Worst window: {report.worst_to_first:.0%} of the first. Failed calls:"
        f" {errors or 'none'}.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.soak", description=__doc__)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument(
        "--bucket-seconds", type=float, default=60.0, help="the width of a reported window"
    )
    parser.add_argument(
        "--database-url",
        default="postgresql://postgres@127.0.0.1:5432/commerce_soak",
        help="a PostgreSQL database to create for the run (dropped after)",
    )
    parser.add_argument("--output", help="write the Markdown here (default: print it)")
    parser.add_argument("--json", help="also write every figure to this JSON file")
    args = parser.parse_args(argv)
    report = soak(sqlalchemy_url(args.database_url), args.minutes, args.bucket_seconds)
    markdown = render(report)
    if args.output:
        Path(args.output).write_text(markdown)
    else:
        print(markdown)
    if args.json:
        Path(args.json).write_text(json.dumps(asdict(report), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
