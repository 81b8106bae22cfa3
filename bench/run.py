"""The benchmark suite: `scripts/bench` (see docs/benchmarks.md).

Seeds a store (1,000,000 customers and 5,000,000 orders at full scale), starts the
suite, the bare baseline (bench/baseline.py) and the REST peer (bench/rest_peer.py)
on that database, and the suite again on a SQLite store (bench/sqlite_store.py),
loads each with h2load (or bench/loadgen.py where requests must differ), three runs
of every comparison, then soaks a fresh database (bench/soak.py), and writes the
results as Markdown with charts (bench/report.py). Every figure is measured in this
run; nothing is asserted about time."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import shlex
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, closing, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import bcrypt
import grpc
from commerce.customers.v1 import customer_service_pb2 as customers_pb
from commerce.orders.v1 import customer_order_service_pb2 as history_pb
from commerce.orders.v1 import order_service_pb2 as orders_pb
from google.protobuf.message import Message

from bench import loadgen, servers, soak
from bench.measure import GRPC_HEADERS, H2Load, Result, cpu_window, grpc_frame
from bench.seed import BENCH_PASSWORD as LOGIN_PASSWORD
from bench.seed import SeededStore, seed_store
from bench.sqlite_store import prepared_sqlite_store
from bench.urls import asyncpg_dsn, sqlalchemy_url
from services.core.domain.pagination import PageTokenCodec

ROOT = servers.ROOT


@dataclass(frozen=True)
class Scale:
    customers: int
    orders: int
    big_customer_orders: int
    warmup: float
    duration: float
    bcrypt_rounds: int
    # The SQLite store (bench.sqlite_store): the embedded default at a moderate size.
    # (Defaults for the studies that take a Scale and measure neither.)
    sqlite_customers: int = 0
    sqlite_orders: int = 0
    sqlite_big_customer_orders: int = 0
    # Runs of every measured window, and the soak's length and window (bench.soak).
    runs: int = 1
    soak_minutes: float = 0
    soak_bucket_seconds: float = 60


SCALES = {
    # bcrypt at the production default cost (services.core.settings).
    "full": Scale(
        1_000_000,
        5_000_000,
        100_000,
        warmup=2,
        duration=10,
        bcrypt_rounds=12,
        sqlite_customers=100_000,
        sqlite_orders=500_000,
        sqlite_big_customer_orders=10_000,
        runs=3,
        soak_minutes=10,
        soak_bucket_seconds=60,
    ),
    # Keeps the suite working in CI: every scenario, tiny and short; cheap logins.
    "smoke": Scale(
        2_000,
        10_000,
        2_000,
        warmup=0.5,
        duration=1,
        bcrypt_rounds=4,
        sqlite_customers=500,
        sqlite_orders=2_000,
        sqlite_big_customer_orders=200,
        runs=1,
        soak_minutes=0.1,
        soak_bucket_seconds=2,
    ),
}


@dataclass
class Report:
    """Everything measured, by table; rendered by bench.report."""

    scale: str
    settings: dict[str, Any]
    machine: dict[str, str] = field(default_factory=dict)  # where, when, which commit
    rows: list[dict[str, Any]] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    runs: int = 1  # each comparison measured this many times (rows say which run)
    soak: dict[str, Any] | None = None  # bench.soak's SoakReport, when it ran

    def add(
        self, scenario: str, target: str, result: Result, *, run: int = 1, **extra: Any
    ) -> None:
        row = {
            "scenario": scenario,
            "target": target,
            "run": run,
            "requests": result.requests,
            "per_second": round(result.per_second, 1),
            "p50_ms": round(result.percentile(0.50), 2),
            "p95_ms": round(result.percentile(0.95), 2),
            "p99_ms": round(result.percentile(0.99), 2),
            "cpu_ms_per_1000": round(result.cpu_ms_per_1000, 1),
            "errors": result.errors,
        } | extra
        self.rows.append(row)
        print(json.dumps(row), flush=True)


# --- the database -----------------------------------------------------------------


async def _ensure_database(url: str, *, fresh: bool) -> None:
    base, _, name = asyncpg_dsn(url).rpartition("/")
    admin = await asyncpg.connect(f"{base}/postgres")
    try:
        exists = await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if exists and fresh:
            await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
            exists = False
        if not exists:
            await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()


def _migrate(url: str) -> None:
    subprocess.run(  # noqa: S603 - our own command
        [servers.COMMERCE, "migrate"],
        env=servers.environment(DATABASE_URL=url),
        check=True,
        cwd=ROOT,
    )


async def _store_exists(url: str, store: SeededStore) -> bool:
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        count = await connection.fetchval(
            "SELECT count(*) FROM customers WHERE store_id = $1", store.store_id
        )
    finally:
        await connection.close()
    return bool(count >= store.customers)


def prepared_store(url: str, scale: Scale, *, reseed: bool) -> SeededStore:
    """The seeded store: reused from an earlier run on the same database (seeding the
    full scale takes minutes), else made now."""
    remembered = ROOT / ".bench" / f"{url.rsplit('/', 1)[1]}.json"
    asyncio.run(_ensure_database(url, fresh=reseed))
    _migrate(url)
    if remembered.exists() and not reseed:
        store = SeededStore(**json.loads(remembered.read_text()))
        if store.customers == scale.customers and asyncio.run(_store_exists(url, store)):
            print(f"reusing store {store.store_id} ({remembered})", flush=True)
            return store
    password_hash = bcrypt.hashpw(
        LOGIN_PASSWORD.encode(), bcrypt.gensalt(scale.bcrypt_rounds)
    ).decode()
    began = time.monotonic()
    store = asyncio.run(
        seed_store(
            url,
            customers=scale.customers,
            orders=scale.orders,
            big_customer_orders=scale.big_customer_orders,
            password_hash=password_hash,
        )
    )
    print(f"seeded store {store.store_id} in {time.monotonic() - began:.0f} s", flush=True)
    remembered.parent.mkdir(exist_ok=True)
    remembered.write_text(json.dumps(asdict(store)))
    return store


async def _fetch_column(url: str, query: str, *args: Any) -> list[Any]:
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        return [row[0] for row in await connection.fetch(query, *args)]
    finally:
        await connection.close()


def typical_order_id(url: str, store: SeededStore) -> int:
    """The typical customer's latest order: GetOrder's order."""
    newest = "SELECT max(order_id) FROM orders WHERE store_id = $1 AND customer_id = $2"
    (order_id,) = asyncio.run(_fetch_column(url, newest, store.store_id, store.typical_customer_id))
    return int(order_id)


def pending_orders(url: str, store_id: int, processes: int, limit: int) -> list[list[int]]:
    """Up to `limit` PENDING orders, for UpdateOrderStatus to move along, dealt out to
    the load generator's processes. Each run moves those it reaches, so the next run
    finds others."""
    # Customers' orders: cancelling one moves its customer's statistics.
    query = (
        "SELECT order_id FROM orders WHERE store_id = $1 AND status = 'pending'"
        " AND customer_id IS NOT NULL ORDER BY order_id LIMIT $2"
    )
    ids = asyncio.run(_fetch_column(url, query, store_id, limit))
    return [ids[process::processes] for process in range(processes)]


async def _counter(url: str, store_id: int, name: str) -> int:
    if url.startswith("sqlite"):
        return _sqlite_counter(url, store_id, name)
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        value = await connection.fetchval(
            "SELECT value FROM store_counters WHERE store_id = $1 AND name = $2", store_id, name
        )
    finally:
        await connection.close()
    return int(value or 0)


async def _order_counts(url: str, store_id: int) -> dict[str, int]:
    """The store's orders made and cancelled so far."""
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        cancelled = await connection.fetchval(
            "SELECT count(*) FROM orders WHERE store_id = $1 AND status = 'cancelled'", store_id
        )
    finally:
        await connection.close()
    return {"created": await _counter(url, store_id, "order"), "cancelled": int(cancelled)}


def _sqlite_counter(url: str, store_id: int, name: str) -> int:
    path = url.split(":///", 1)[1]
    with closing(sqlite3.connect(path)) as connection:
        found = connection.execute(
            "SELECT value FROM store_counters WHERE store_id = ? AND name = ?", (store_id, name)
        ).fetchone()
    return int(found[0] if found else 0)


# --- the scenarios ----------------------------------------------------------------


@dataclass(frozen=True)
class Unary:
    """One fixed gRPC request, as h2load sends it."""

    path: str
    request: Message

    @property
    def is_create(self) -> bool:
        return self.path.endswith("/CreateOrder")

    def check(self, target: str) -> Message:
        """Calls it once through a real channel: h2load cannot see a gRPC status."""
        response_type = _response_types[self.path]
        with grpc.insecure_channel(target) as channel:
            call = channel.unary_unary(
                self.path,
                request_serializer=type(self.request).SerializeToString,
                response_deserializer=response_type.FromString,
            )
            response: Message = call(self.request, timeout=30)
            return response


_CUSTOMERS = "/commerce.customers.v1.CustomerService/"
_ORDERS = "/commerce.orders.v1.OrderService/"
_HISTORY = "/commerce.orders.v1.CustomerOrderService/"
_response_types: dict[str, type[Message]] = {
    _CUSTOMERS + "GetCustomer": customers_pb.GetCustomerResponse,
    _CUSTOMERS + "ListCustomers": customers_pb.ListCustomersResponse,
    _CUSTOMERS + "AuthenticateCustomer": customers_pb.AuthenticateCustomerResponse,
    _ORDERS + "CreateOrder": orders_pb.CreateOrderResponse,
    _ORDERS + "GetOrder": orders_pb.GetOrderResponse,
    _ORDERS + "ListOrders": orders_pb.ListOrdersResponse,
    _HISTORY + "GetCustomerOrderStats": history_pb.GetCustomerOrderStatsResponse,
    _HISTORY + "ListCustomerOrders": history_pb.ListCustomerOrdersResponse,
}


def customers_scope(store_id: int) -> dict[str, Any]:
    """The query a page token of ListCustomers without filters belongs to."""
    return {"list": "customers", "store_id": store_id, "active": None, "query": ""}


def unary_scenarios(store: SeededStore, scale: Scale, order_id: int) -> dict[str, Unary]:
    deep_after = store.customers * 9 // 10
    deep_token = PageTokenCodec(servers.PAGE_TOKEN_SECRET).encode(
        customers_scope(store.store_id), [deep_after]
    )
    s = store.store_id
    return {
        "GetCustomer": Unary(
            _CUSTOMERS + "GetCustomer",
            customers_pb.GetCustomerRequest(store_id=s, customer_id=store.typical_customer_id),
        ),
        "ListCustomers, page 1": Unary(
            _CUSTOMERS + "ListCustomers",
            customers_pb.ListCustomersRequest(store_id=s, page_size=50),
        ),
        f"ListCustomers, after customer {deep_after:,}": Unary(
            _CUSTOMERS + "ListCustomers",
            customers_pb.ListCustomersRequest(store_id=s, page_size=50, page_token=deep_token),
        ),
        "CreateOrder": Unary(
            _ORDERS + "CreateOrder", loadgen.order_request(s, store.typical_customer_id)
        ),
        "GetOrder": Unary(
            _ORDERS + "GetOrder", orders_pb.GetOrderRequest(store_id=s, order_id=order_id)
        ),
        "ListOrders, page 1": Unary(
            _ORDERS + "ListOrders", orders_pb.ListOrdersRequest(store_id=s, page_size=50)
        ),
        big_stats_name(scale): Unary(
            _HISTORY + "GetCustomerOrderStats",
            history_pb.GetCustomerOrderStatsRequest(store_id=s, customer_id=store.big_customer_id),
        ),
        TYPICAL_STATS: Unary(
            _HISTORY + "GetCustomerOrderStats",
            history_pb.GetCustomerOrderStatsRequest(
                store_id=s, customer_id=store.typical_customer_id
            ),
        ),
        f"ListCustomerOrders, page 1 of {scale.big_customer_orders:,} orders": Unary(
            _HISTORY + "ListCustomerOrders",
            history_pb.ListCustomerOrdersRequest(
                store_id=s, customer_id=store.big_customer_id, page_size=50
            ),
        ),
    }


TYPICAL_STATS = "GetCustomerOrderStats, a typical customer"
MIXED = "Mixed: 60% reads of customers, 25% of orders, 15% CreateOrder"
MIXED_WRITES = (
    "Mixed, 10% writes: 50% GetCustomer, 10% GetOrder, 15% ListCustomerOrders,"
    " 14% GetCustomerOrderStats, 1% the biggest customer's, 5% CreateOrder, 5% CancelOrder"
)
# The suite on its embedded default against itself on PostgreSQL.
SQLITE = "suite-sqlite"
SQLITE_VERSUS = ", SQLite against PostgreSQL"
# The suite of an earlier revision, one that keeps no order statistics (--without-statistics).
WITHOUT_STATISTICS = "suite-without-statistics"
CREATE_WITHOUT_STATISTICS = "CreateOrder, statistics kept against not"


def big_stats_name(scale: Scale) -> str:
    return f"GetCustomerOrderStats, {scale.big_customer_orders:,} orders"


def login(store: SeededStore) -> Unary:
    return Unary(
        _CUSTOMERS + "AuthenticateCustomer",
        customers_pb.AuthenticateCustomerRequest(
            store_id=store.store_id, email=store.login_email, password=LOGIN_PASSWORD
        ),
    )


class Bench:
    def __init__(self, url: str, scale: Scale, store: SeededStore, report: Report) -> None:
        self.url = url
        self.scale = scale
        self.store = store
        self.report = report
        self.number = 1  # the run being measured (of report.runs)
        # 32 calls in flight over 2 HTTP/2 connections, as the yardstick measured.
        self.load = H2Load(2, 16, scale.warmup, scale.duration)
        # Where each server's orders are counted (CreateOrder's proof): its database
        # and store; the PostgreSQL store's unless said.
        self.databases: dict[str, tuple[str, int]] = {}

    def unary(self, name: str, call: Unary, server: servers.Running, load: H2Load) -> None:
        """One server under one load."""
        result, created = self._unary(call, server, load)
        self.report.add(name, server.name, result, run=self.number, **created)

    def unary_pair(
        self,
        name: str,
        call: Unary,
        ours: servers.Running,
        base: servers.Running,
        base_call: Unary | None = None,
    ) -> None:
        """The suite and the baseline (or any two servers, each with its own request
        when `base_call` is given) in the order A B B A, each figure the two windows
        together: a drift of the machine over the four windows (a busier database, a
        warmer cache) weighs on both alike."""
        calls = {ours.name: call, base.name: base_call or call}
        windows: dict[str, list[tuple[Result, dict[str, int]]]] = {ours.name: [], base.name: []}
        for server in (ours, base, base, ours):
            windows[server.name].append(self._unary(calls[server.name], server, self.load))
        for server_name, measured in windows.items():
            created = sum(extra.get("created", 0) for _, extra in measured)
            extra = {"created": created} if call.is_create else {}
            combined = Result.combined([r for r, _ in measured])
            self.report.add(name, server_name, combined, run=self.number, **extra)

    def _unary(
        self, call: Unary, server: servers.Running, load: H2Load
    ) -> tuple[Result, dict[str, int]]:
        call.check(server.target)
        url, store_id = self.databases.get(server.name, (self.url, self.store.store_id))
        if call.is_create:
            before = asyncio.run(_counter(url, store_id, "order"))
        result = load.run(
            f"http://{server.target}{call.path}",
            server.pid,
            body=grpc_frame(call.request.SerializeToString()),
            headers=GRPC_HEADERS,
        )
        if not call.is_create:
            return result, {}
        # Every order h2load saw answered must be in the database, and no more (h2load
        # reads no gRPC status: the counter is the proof).
        created = asyncio.run(_counter(url, store_id, "order")) - before
        return result, {"created": created}

    def rest(self, name: str, path: str, server: servers.Running) -> None:
        load = H2Load(32, 1, self.scale.warmup, self.scale.duration, http1=True)
        result = load.run(
            f"http://{server.target}{path}",
            server.pid,
            headers=(f"x-store-id: {self.store.store_id}",),
        )
        self.report.add(name, server.name, result, run=self.number)

    def generated(
        self,
        name: str,
        scenario: str,
        server: servers.Running,
        *,
        concurrency: int,
    ) -> None:
        """A scenario of bench/loadgen.py: requests that differ call by call."""
        processes = loadgen.processes_for()
        data = asdict(self.store) | {"run": f"{time.time_ns()}"}
        if scenario in ("update_order_status", "mixed_writes"):
            # More than the fastest server moves (or cancels: one call in twenty of
            # the mix) in a window, warm-up included.
            limit = 40_000 if self.scale.duration >= 10 else 4_000
            if scenario == "mixed_writes":
                limit //= 10
            data["pending_orders"] = pending_orders(self.url, self.store.store_id, processes, limit)
        writes = scenario == "mixed_writes"
        if writes:
            before = asyncio.run(_order_counts(self.url, self.store.store_id))
        with loadgen.ready_pool(processes) as pool:
            lead = 0.5  # seconds from the plan to its start, for the processes to read it
            plan = loadgen.Plan(
                scenario=scenario,
                target=server.target,
                start_at=time.time() + lead,
                warmup=self.scale.warmup,
                duration=self.scale.duration,
                concurrency=concurrency,
                data=data,
            )
            with cpu_window(server.pid, lead + self.scale.warmup) as cpu:
                tally = loadgen.run(plan, processes, pool)
        extra: dict[str, int] = {}
        if writes:
            # The writes' proof, as CreateOrder's: what the database gained (warm-up
            # included).
            after = asyncio.run(_order_counts(self.url, self.store.store_id))
            extra = {name: after[name] - before[name] for name in after}
        result = Result(
            len(tally.latencies_ms),
            sum(tally.errors.values()),
            self.scale.duration,
            tally.latencies_ms,
            cpu(),
        )
        self.report.add(
            name, server.name, result, run=self.number, error_codes=tally.errors, **extra
        )


def bcrypt_checks_per_second(seconds: float, rounds: int) -> float:
    """Raw bcrypt.checkpw on every core at once: the ceiling for logins."""
    hashed = bcrypt.hashpw(LOGIN_PASSWORD.encode(), bcrypt.gensalt(rounds))
    stop_at = time.monotonic() + seconds
    cores = os.cpu_count() or 1

    def checks() -> int:
        done = 0
        while time.monotonic() < stop_at:
            bcrypt.checkpw(LOGIN_PASSWORD.encode(), hashed)
            done += 1
        return done

    began = time.monotonic()
    with ThreadPoolExecutor(cores) as pool:
        total = sum(pool.map(lambda _: checks(), range(cores)))
    return total / (time.monotonic() - began)


@contextmanager
def background(load: H2Load, url: str, body: bytes, pid: int) -> Iterator[None]:
    """Runs a load in a thread while the block measures something else."""
    runner = threading.Thread(
        target=lambda: load.run(url, pid, body=body, headers=GRPC_HEADERS), daemon=True
    )
    runner.start()
    time.sleep(1)  # the storm is on before the measurement starts
    try:
        yield
    finally:
        runner.join()


def run(
    url: str,
    scale_name: str,
    *,
    reseed: bool,
    runs: int | None = None,
    soak_minutes: float | None = None,
    without_statistics: str | None = None,
) -> Report:
    """Every measurement of the benchmark: the comparisons `runs` times over (default:
    the scale's), then what is measured once (logins, two workers), then the soak
    (`soak_minutes`, default the scale's; 0: none). With `without_statistics` (a git
    revision that keeps no order statistics), each run also sets CreateOrder beside
    that revision's, served from a checkout of it on the same database."""
    scale = SCALES[scale_name]
    runs = scale.runs if runs is None else runs
    soak_minutes = scale.soak_minutes if soak_minutes is None else soak_minutes
    store = prepared_store(url, scale, reseed=reseed)
    sqlite_url, sqlite_store, sqlite_size = prepared_sqlite_store(
        url,
        customers=scale.sqlite_customers,
        orders=scale.sqlite_orders,
        big_customer_orders=scale.sqlite_big_customer_orders,
        password_hash=lambda: bcrypt.hashpw(
            LOGIN_PASSWORD.encode(), bcrypt.gensalt(scale.bcrypt_rounds)
        ).decode(),
        reseed=reseed,
    )
    report = Report(
        scale_name,
        machine=machine(),
        settings={
            "store": asdict(store),
            "big_customer_orders": scale.big_customer_orders,
            "warmup_s": scale.warmup,
            "duration_s": scale.duration,
            "bcrypt_rounds": scale.bcrypt_rounds,
            "sqlite_store": asdict(sqlite_store) | sqlite_size,
        },
        runs=runs,
    )
    probe = (store.store_id, store.typical_customer_id)
    bench = Bench(url, scale, store, report)
    bench.databases[SQLITE] = (sqlite_url, sqlite_store.store_id)
    calls = unary_scenarios(store, scale, typical_order_id(url, store))
    sqlite_calls = {
        "GetCustomer": Unary(
            _CUSTOMERS + "GetCustomer",
            customers_pb.GetCustomerRequest(
                store_id=sqlite_store.store_id, customer_id=sqlite_store.typical_customer_id
            ),
        ),
        "CreateOrder": Unary(
            _ORDERS + "CreateOrder",
            loadgen.order_request(sqlite_store.store_id, sqlite_store.typical_customer_id),
        ),
    }
    with tempfile.TemporaryDirectory(prefix="bench-logs-") as logs, ExitStack() as stack:
        log_dir = Path(logs)
        ours = stack.enter_context(
            servers.suite(url, probe, log_dir, bcrypt_rounds=scale.bcrypt_rounds)
        )
        base = stack.enter_context(
            servers.baseline(url, probe, log_dir, bcrypt_rounds=scale.bcrypt_rounds)
        )
        rest = stack.enter_context(servers.rest_peer(url, probe, log_dir))
        embedded = stack.enter_context(
            servers.suite(
                sqlite_url,
                (sqlite_store.store_id, sqlite_store.typical_customer_id),
                log_dir,
                bcrypt_rounds=scale.bcrypt_rounds,
                name=SQLITE,
            )
        )
        _check_deep_token(calls, store, ours)
        without = None
        if without_statistics:
            checkout = stack.enter_context(_checkout(without_statistics))
            without = stack.enter_context(
                servers.suite(
                    url,
                    probe,
                    log_dir,
                    bcrypt_rounds=scale.bcrypt_rounds,
                    name=WITHOUT_STATISTICS,
                    settings={"PYTHONPATH": str(checkout)},
                )
            )

        for number in range(1, runs + 1):
            bench.number = number
            print(f"run {number} of {runs}", flush=True)
            _comparisons(bench, calls, sqlite_calls, ours, base, rest, embedded)
            if without is not None:
                # What keeping the statistics costs CreateOrder: the same load, in turns.
                bench.unary_pair(CREATE_WITHOUT_STATISTICS, calls["CreateOrder"], ours, without)

        bench.number = 1  # what follows is measured once
        # Logins: bcrypt at the production cost on every core is the ceiling.
        logins = H2Load(1, 8, scale.warmup, scale.duration)
        for server in (ours, base):
            bench.unary("AuthenticateCustomer", login(store), server, logins)
        report.facts["bcrypt_checks_per_second"] = round(
            bcrypt_checks_per_second(scale.duration, scale.bcrypt_rounds), 2
        )
        storm = H2Load(1, 8, 0, scale.warmup + scale.duration + 1)
        get_customer = calls["GetCustomer"]
        body = grpc_frame(login(store).request.SerializeToString())
        with background(storm, f"http://{ours.target}{login(store).path}", body, ours.pid):
            bench.unary("GetCustomer during a login storm", get_customer, ours, bench.load)

    with (
        tempfile.TemporaryDirectory(prefix="bench-logs-") as logs,
        servers.suite(url, probe, Path(logs), bcrypt_rounds=scale.bcrypt_rounds, workers=2) as two,
    ):
        bench.unary("GetCustomer, 2 worker processes", calls["GetCustomer"], two, bench.load)
        bench.unary("CreateOrder, 2 worker processes", calls["CreateOrder"], two, bench.load)

    if soak_minutes > 0:
        # A database of its own, beside the benchmark's: it starts empty.
        soaked = soak.soak(url + "_soak", soak_minutes, scale.soak_bucket_seconds)
        report.soak = asdict(soaked)
    return report


def _comparisons(
    bench: Bench,
    calls: dict[str, Unary],
    sqlite_calls: dict[str, Unary],
    ours: servers.Running,
    base: servers.Running,
    rest: servers.Running,
    embedded: servers.Running,
) -> None:
    """One run of every comparison: the suite against the baseline, the REST peer,
    and itself on SQLite."""
    store, scale = bench.store, bench.scale
    for name, call in calls.items():
        bench.unary_pair(name, call, ours, base)
    customer_path = f"/api/store/customers/{store.typical_customer_id}"
    bench.rest("GetCustomer", customer_path, rest)
    stats_path = f"/api/store/customers/{store.big_customer_id}/order-stats"
    bench.rest(big_stats_name(scale), stats_path, rest)
    for name, sqlite_call in sqlite_calls.items():
        bench.unary_pair(name + SQLITE_VERSUS, calls[name], ours, embedded, sqlite_call)

    for server in (ours, base):
        bench.generated("CreateCustomer", "create_customer", server, concurrency=4)
        bench.generated("UpdateCustomer", "update_customer", server, concurrency=16)
        bench.generated("UpdateOrderStatus", "update_order_status", server, concurrency=16)
        bench.generated(MIXED, "mixed", server, concurrency=16)
        bench.generated(MIXED_WRITES, "mixed_writes", server, concurrency=16)


@contextmanager
def _checkout(revision: str) -> Iterator[Path]:
    """A temporary checkout of `revision` of this repository, its code importable
    from the folder given (PYTHONPATH) ahead of the installed one."""
    with tempfile.TemporaryDirectory(prefix="bench-checkout-") as parent:
        folder = Path(parent) / "code"
        git = ["git", "-C", str(ROOT), "worktree"]
        subprocess.run(  # noqa: S603 - git, on this repository
            [*git, "add", "--quiet", "--detach", str(folder), revision], check=True
        )
        try:
            yield folder
        finally:
            subprocess.run([*git, "remove", "--force", str(folder)], check=False)  # noqa: S603


def _check_deep_token(calls: dict[str, Unary], store: SeededStore, ours: servers.Running) -> None:
    """The deep page's token is made here, with the server's secret: page 1's token
    from the server must be what the same construction gives, or the scenario would
    measure an error."""
    first = calls["ListCustomers, page 1"].check(ours.target)
    made = PageTokenCodec(servers.PAGE_TOKEN_SECRET).encode(customers_scope(store.store_id), [50])
    if first.next_page_token != made:  # type: ignore[attr-defined]
        raise RuntimeError("the bench's page tokens differ from the server's")


def machine() -> dict[str, str]:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    memory_kb = int(Path("/proc/meminfo").read_text().split()[1])
    commit = subprocess.run(
        ["git", "describe", "--always", "--dirty"],  # noqa: S607
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    ).stdout.strip()
    return {
        "cpu": f"{os.cpu_count()} x {model}",
        "memory": f"{memory_kb / 1024 / 1024:.0f} GiB",
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "commit": commit,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": shlex.join(["scripts/bench", *sys.argv[1:]]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny and short: does it all work?")
    parser.add_argument(
        "--database-url",
        default="postgresql://postgres@127.0.0.1:5432/commerce_bench",
        help="a PostgreSQL database for the benchmark (created if missing)",
    )
    parser.add_argument("--reseed", action="store_true", help="drop and seed the database anew")
    parser.add_argument(
        "--runs",
        type=int,
        help="measure every comparison this many times (default: 3; --smoke: 1)",
    )
    parser.add_argument(
        "--soak-minutes",
        type=float,
        help="the soak's length, on a database of its own (default: 10; --smoke: 0.1; 0: no soak)",
    )
    parser.add_argument("--output", help="Markdown file to write (default: docs/benchmarks.md)")
    parser.add_argument("--json", help="also write every figure to this JSON file")
    parser.add_argument(
        "--from-json", help="measure nothing: render the Markdown of an earlier run's --json"
    )
    parser.add_argument(
        "--before",
        help="an earlier run's --json (say, of the code before a change): the report "
        "sets this run's figures beside it",
    )
    parser.add_argument(
        "--without-statistics",
        metavar="REVISION",
        help="a git revision whose suite keeps no order statistics: each run sets "
        "CreateOrder beside it (what keeping them costs)",
    )
    args = parser.parse_args(argv)
    if args.runs is not None and args.runs < 1:
        parser.error("--runs must be at least 1")
    from bench.report import publish

    output = Path(args.output or ROOT / "docs" / "benchmarks.md")
    before = _load(args.before) if args.before else None
    if args.from_json:
        publish(_load(args.from_json), output, before=before)
        print(f"wrote {output}")
        return 0
    scale = "smoke" if args.smoke else "full"
    url = sqlalchemy_url(args.database_url)
    if args.smoke and url.endswith("/commerce_bench"):
        url += "_smoke"
    report = run(
        url,
        scale,
        reseed=args.reseed or args.smoke,
        runs=args.runs,
        soak_minutes=args.soak_minutes,
        without_statistics=args.without_statistics,
    )
    if args.json:
        Path(args.json).write_text(json.dumps(asdict(report), indent=1))
    publish(report, output, before=before)
    print(f"wrote {output}")
    return 0


def _load(path: str) -> Report:
    return Report(**json.loads(Path(path).read_text()))


if __name__ == "__main__":
    sys.exit(main())
