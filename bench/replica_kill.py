"""One of three server replicas killed under a steady load: `python -m bench.replica_kill`.

Three `commerce serve` processes on their own ports share one fresh PostgreSQL
database (created for the run, dropped after). One client process calls them over
commerce.client (round_robin over the three, its retry policy), with a fixed number
of calls in flight: creates of customers and of orders (each with a request_id of
its own), GetCustomer and ListCustomers, in turn. After a steady while, one replica
is killed with SIGKILL; the load goes on over the other two for a while more.

Reported: the calls that failed (by status), the duplicates (rows beyond one per
request_id, counted in the database), the throughput before the kill and after it
(each over the second half of its period, when steady) and their ratio, the time
from the kill until the throughput is back at the survivors' level (90% of it over
a sliding second), the first second after the kill against that level, the deepest
dip, the slowest call that spanned the kill, and calls/s second by second (JSON).
Nothing is asserted about time.

On one machine the killed replica's CPU goes to the others, so the survivors' level
is near the level before; on hosts of their own the fleet loses a third of its
capacity instead, and the ratio says what the client-side limit was.

Usage: python -m bench.replica_kill [--database-url URL] [--smoke] [--json FILE]"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, asynccontextmanager, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import grpc
from commerce.client import connect
from commerce.customers.v1 import customer_service_pb2 as customers_pb
from commerce.customers.v1 import customer_service_pb2_grpc as customers_grpc
from commerce.orders.v1 import order_pb2
from commerce.orders.v1 import order_service_pb2 as orders_pb
from commerce.orders.v1 import order_service_pb2_grpc as orders_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench import study
from bench.run import machine
from bench.servers import COMMERCE, PAGE_TOKEN_SECRET, ROOT, environment, free_port
from bench.urls import asyncpg_dsn, sqlalchemy_url

REPLICAS = 3
RECOVERED = 0.9  # of the survivors' level
WINDOW_S = 1.0  # the sliding window throughput is judged over
BUCKET_S = 0.1


@dataclass(frozen=True)
class Plan:
    in_flight: int
    before_s: float
    after_s: float


PLANS = {"full": Plan(32, 10.0, 20.0), "smoke": Plan(8, 1.5, 2.0)}


@dataclass
class Load:
    """Each call's (start, end) in monotonic seconds, the failures by status, and the
    resource each request_id was answered with."""

    calls: list[tuple[float, float]] = field(default_factory=list)
    failed: Counter[str] = field(default_factory=Counter)
    customers: dict[str, int] = field(default_factory=dict)
    orders: dict[str, int] = field(default_factory=dict)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)


@asynccontextmanager
async def fresh_database(url: str) -> AsyncIterator[str]:
    """A new database beside `url`'s, migrated and holding store 1; dropped after."""
    admin = await asyncpg.connect(asyncpg_dsn(url))
    name = f"commerce_bench_replicas_{os.getpid()}"
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.execute(f'CREATE DATABASE "{name}"')
    database = sqlalchemy_url(asyncpg_dsn(url).rsplit("/", 1)[0] + f"/{name}")
    try:
        env = environment(DATABASE_URL=database)
        for arguments in (("migrate",), ("stores", "create", "--name", "Replicas")):
            command = await asyncio.create_subprocess_exec(
                COMMERCE, *arguments, env=env, cwd=ROOT, stdout=subprocess.DEVNULL
            )
            if await command.wait() != 0:
                raise RuntimeError(f"commerce {' '.join(arguments)} failed")
        yield database
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def _healthy(port: int) -> bool:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        health: Any = health_pb2_grpc.HealthStub(channel)  # its stubs declare no methods
        try:
            status = health.Check(health_pb2.HealthCheckRequest(), timeout=2)
        except grpc.RpcError:
            return False
    return bool(status.status == health_pb2.HealthCheckResponse.SERVING)


@contextmanager
def replica(database_url: str, log_dir: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """One `commerce serve` (log level WARNING: no line per call), answering health."""
    port = free_port()
    env = environment(
        DATABASE_URL=database_url,
        COMMERCE_PAGE_TOKEN_SECRET=PAGE_TOKEN_SECRET,
        COMMERCE_BCRYPT_ROUNDS="4",
        COMMERCE_LOG_LEVEL="WARNING",
    )
    with (log_dir / f"replica-{port}.log").open("w") as sink:
        process = subprocess.Popen(  # noqa: S603 - our own entry point
            [COMMERCE, "serve", "--listen-address", f"127.0.0.1:{port}"],
            env=env,
            cwd=ROOT,
            stdout=sink,
            stderr=sink,
        )
    try:
        deadline = time.monotonic() + 60
        while not _healthy(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"replica on {port} did not start")
            time.sleep(0.2)
        yield process, f"127.0.0.1:{port}"
    finally:
        if process.poll() is None:
            process.terminate()
        process.wait()


async def _one_call(step: int, channel: grpc.aio.Channel, load: Load, store_id: int) -> None:
    customers = customers_grpc.CustomerServiceStub(channel)
    request_id = str(uuid.uuid4())
    match step % 4:
        case 0:
            created = await customers.CreateCustomer(
                customers_pb.CreateCustomerRequest(
                    store_id=store_id, email=f"{request_id}@example.com", request_id=request_id
                )
            )
            load.customers[request_id] = created.customer.customer_id
        case 1:
            line = order_pb2.OrderLineItem(
                sku="SKU-1", name="Product", quantity=1, unit_price_minor=1000
            )
            placed = await orders_grpc.OrderServiceStub(channel).CreateOrder(
                orders_pb.CreateOrderRequest(
                    store_id=store_id, line_items=[line], currency_code="EUR", request_id=request_id
                )
            )
            load.orders[request_id] = placed.order.order_id
        case 2:
            ids = list(load.customers.values())
            await customers.GetCustomer(
                customers_pb.GetCustomerRequest(store_id=store_id, customer_id=ids[step % len(ids)])
            )
        case _:
            await customers.ListCustomers(
                customers_pb.ListCustomersRequest(store_id=store_id, page_size=10)
            )


async def _caller(number: int, channel: grpc.aio.Channel, load: Load, store_id: int) -> None:
    step = number
    while not load.stopping.is_set():
        step += 1
        started = time.monotonic()
        try:
            await _one_call(step, channel, load, store_id)
        except grpc.aio.AioRpcError as error:
            load.failed[error.code().name] += 1
        load.calls.append((started, time.monotonic()))


async def drive(
    plan: Plan, targets: list[str], victim: subprocess.Popen[bytes]
) -> tuple[Load, float, float, float]:
    """The load over `targets`, `victim` killed midway: (load, start, kill, end)."""
    load = Load()
    channel = connect(targets)
    try:
        seeding = customers_grpc.CustomerServiceStub(channel)
        for _ in range(10):
            request_id = str(uuid.uuid4())
            created = await seeding.CreateCustomer(
                customers_pb.CreateCustomerRequest(
                    store_id=1, email=f"{request_id}@example.com", request_id=request_id
                )
            )
            load.customers[request_id] = created.customer.customer_id
        start = time.monotonic()
        callers = [
            asyncio.create_task(_caller(number, channel, load, 1))
            for number in range(plan.in_flight)
        ]
        await asyncio.sleep(plan.before_s)
        killed = time.monotonic()
        victim.kill()
        await asyncio.sleep(plan.after_s)
        load.stopping.set()
        await asyncio.gather(*callers)
        end = time.monotonic()
    finally:
        await channel.close()
    return load, start, killed, end


def _rate(ends: list[float], start: float, stop: float) -> float:
    return sum(start <= end < stop for end in ends) / (stop - start)


def figures(load: Load, start: float, killed: float, end: float) -> dict[str, Any]:
    """Throughput before and after, recovery time, dip, slowest call across the kill.

    Before: the second half of the time before the kill; the survivors' level: the
    second half of the time after it. Recovered: the first one-second window from the
    kill on whose throughput is 90% of that level."""
    ends = sorted(end_ for _, end_ in load.calls)
    before = _rate(ends, (start + killed) / 2, killed)
    level = _rate(ends, (killed + end) / 2, end)
    windows = []
    bucket = killed
    while bucket + WINDOW_S <= (killed + end) / 2:
        windows.append((bucket - killed, _rate(ends, bucket, bucket + WINDOW_S)))
        bucket += BUCKET_S
    recovered = next((offset for offset, rate in windows if rate >= RECOVERED * level), None)
    dip = min((rate for _, rate in windows), default=level)
    across = [end_ - begun for begun, end_ in load.calls if begun < killed < end_]
    series, bucket = [], start
    while bucket + WINDOW_S <= end:
        series.append([round(bucket - killed, 1), round(_rate(ends, bucket, bucket + WINDOW_S))])
        bucket += WINDOW_S
    return {
        "calls": len(load.calls),
        "failed": dict(load.failed),
        "per_second_before": round(before, 1),
        "per_second_after": round(level, 1),
        "ratio_after_to_before": round(level / before, 3) if before else None,
        "first_second_to_after": (
            round(_rate(ends, killed, killed + 1) / level, 3) if level else None
        ),
        "recovery_s": None if recovered is None else round(recovered, 2),
        "dip_ratio": round(dip / before, 3) if before else None,
        "in_flight_at_kill": len(across),
        "slowest_call_across_kill_ms": round(max(across, default=0) * 1000, 1),
        # [seconds from the kill, calls/s over the second from there]
        "series": series,
    }


_ROWS_AND_KEYS = """
SELECT (SELECT count(*) FROM customers WHERE store_id = 1),
       (SELECT count(*) FROM orders WHERE store_id = 1),
       (SELECT array_agg(request_id) FROM idempotency_keys
        WHERE store_id = 1 AND operation IN ('customers.CreateCustomer', 'orders.CreateOrder'))
"""


async def made_in_database(database_url: str, load: Load) -> dict[str, int]:
    """duplicates: rows beyond one per request_id (every create carried one, so each
    row has its key); unanswered: creates done whose caller never got the answer."""
    connection = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        customers, orders, keys = await connection.fetchrow(_ROWS_AND_KEYS)
    finally:
        await connection.close()
    answered = set(load.customers) | set(load.orders)
    return {
        "duplicates": int(customers + orders - len(keys or [])),
        "unanswered_creates": len(set(keys or []) - answered),
    }


def run(url: str, plan_name: str) -> dict[str, Any]:
    plan = PLANS[plan_name]

    async def measure() -> dict[str, Any]:
        async with fresh_database(url) as database:
            with tempfile.TemporaryDirectory(prefix="bench-replicas-") as logs, ExitStack() as up:
                started = [up.enter_context(replica(database, Path(logs))) for _ in range(3)]
                targets = [target for _, target in started]
                load, start, killed, end = await drive(plan, targets, started[1][0])
            made = await made_in_database(database, load)
        return figures(load, start, killed, end) | made

    result = asyncio.run(measure())
    return {"plan": plan_name, "settings": asdict(plan), "machine": machine()} | result


def render(report: dict[str, Any]) -> str:
    failed = sum(report["failed"].values())
    rows = [
        ("calls", f"{report['calls']:,}"),
        ("failed calls", f"{failed} {report['failed'] or ''}".strip()),
        ("duplicates", str(report["duplicates"])),
        ("creates done but never answered", str(report["unanswered_creates"])),
        ("calls in flight at the kill", str(report["in_flight_at_kill"])),
        ("slowest call across the kill", f"{report['slowest_call_across_kill_ms']} ms"),
        ("calls/s before (3 replicas)", f"{report['per_second_before']:,}"),
        ("calls/s after (2 replicas)", f"{report['per_second_after']:,}"),
        ("after / before", str(report["ratio_after_to_before"])),
        ("first second after the kill / after", str(report["first_second_to_after"])),
        ("deepest dip (1 s window) / before", str(report["dip_ratio"])),
        ("first 1 s window at 90% of the survivors' level", f"{report['recovery_s']} s"),
    ]
    return "\n".join(
        ["| figure | value |", "|---|---|", *(f"| {name} | {value} |" for name, value in rows)]
    )


def main(argv: list[str] | None = None) -> int:
    parser = study.arguments(
        "replica_kill",
        __doc__,
        database="postgres",
        database_help="a PostgreSQL database to connect to; the run's own is created beside it",
    )
    args = parser.parse_args(argv)
    report = run(args.database_url, study.scale(args))
    return study.publish(report, render(report), args.json)


if __name__ == "__main__":
    sys.exit(main())
