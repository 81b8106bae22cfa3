"""CreateOrder in one hot store against the same load spread over many stores:
`python -m bench.hot_store`.

Every create in a store takes that store's order number, so creates of one store
may queue on each other where creates of different stores never do. This measures
how much: a fresh database with one store of `creators` customers (the hot store)
and `creators` stores of one customer each (spread out), then `commerce serve` (one
process, its production defaults) and `creators` concurrent creators from a Python
load generator (bench.loadgen's way: spawned processes, one wall-clock start), each
placing orders one after the other for its own customer: all in the hot store, or
each in its own store. Windows in the order hot, spread, spread, hot; each figure is
its two windows together, so a drift of the shared machine weighs on both alike.

While each window runs, `pg_stat_activity` is sampled: what the server's
connections are doing (running, waiting on a lock, flushing the WAL, idle in a
transaction while the server gets round to its next statement) says where the
hot store's time goes. Every successful call is checked against the orders the
database holds after. Nothing is asserted about time.

Usage: python -m bench.hot_store [--database-url URL] [--smoke] [--json FILE]
[--workers N] [--without-notify]"""

from __future__ import annotations

import asyncio
import multiprocessing
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Awaitable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import bcrypt
import grpc
from commerce.orders.v1 import order_service_pb2_grpc as orders_grpc

from bench import loadgen, servers, study
from bench.measure import Result, cpu_window
from bench.run import Report, _ensure_database, _migrate, machine
from bench.seed import BENCH_PASSWORD, seed_store
from bench.urls import asyncpg_dsn, sqlalchemy_url

# A creator: the store it places orders in and the customer it places them for.
Slot = tuple[int, int]
# The loads compared: all creators in the hot store, or each in a store of its own.
LOADS = ("hot", "spread")


@dataclass(frozen=True)
class Scale:
    creators: int
    warmup: float
    duration: float


SCALES = {
    "full": Scale(64, warmup=2, duration=10),
    "smoke": Scale(8, warmup=0.5, duration=1),
}
LOAD_PROCESSES = 2
SPAWN_SECONDS = 3.0  # for the load generator's processes to start before the load does
SAMPLE_EVERY = 0.02  # seconds between two looks at pg_stat_activity


@dataclass(frozen=True)
class Stores:
    """The seeded stores: creator i's slot in the hot store and in its own."""

    hot: list[Slot]
    spread: list[Slot]

    def slots(self, load: str) -> list[Slot]:
        return self.hot if load == "hot" else self.spread


async def seed(url: str, creators: int) -> Stores:
    """The hot store with a customer per creator, and a store per creator with one
    customer (bench.seed makes at least two; the second is the one used)."""
    password_hash = bcrypt.hashpw(BENCH_PASSWORD.encode(), bcrypt.gensalt(4)).decode()

    async def store(customers: int) -> int:
        seeded = await seed_store(
            url, customers=customers, orders=0, big_customer_orders=0, password_hash=password_hash
        )
        return seeded.store_id

    hot = await store(max(2, creators))
    spread = [(await store(2), 2) for _ in range(creators)]
    return Stores([(hot, customer + 1) for customer in range(creators)], spread)


@dataclass(frozen=True)
class Plan:
    target: str
    start_at: float  # time.time() at which every process begins its warm-up
    warmup: float
    duration: float
    slots: list[Slot]  # this process's creators


async def _drive(plan: Plan) -> loadgen.Tally:
    tally = loadgen.Tally()
    measure_from = plan.start_at + plan.warmup
    stop_at = measure_from + plan.duration
    async with grpc.aio.insecure_channel(plan.target) as channel:
        orders = orders_grpc.OrderServiceStub(channel)
        await asyncio.sleep(max(0.0, plan.start_at - time.time()))

        async def creator(store_id: int, customer_id: int) -> None:
            request = loadgen.order_request(store_id, customer_id)

            def create() -> Awaitable[Any]:
                return orders.CreateOrder(request, timeout=30)

            await tally.keep_calling(lambda: create, measure_from, stop_at)

        await asyncio.gather(*(creator(*slot) for slot in plan.slots))
    return tally


def _run_process(plan: Plan) -> loadgen.Tally:
    return asyncio.run(_drive(plan))


def _load(target: str, slots: list[Slot], scale: Scale) -> loadgen.Tally:
    """Every creator placing orders for the window; blocks until done."""
    start_at = time.time() + SPAWN_SECONDS
    plans = [
        Plan(target, start_at, scale.warmup, scale.duration, slots[process::LOAD_PROCESSES])
        for process in range(LOAD_PROCESSES)
    ]
    total = loadgen.Tally()
    # fork would copy this process's gRPC state; a fresh interpreter is safe.
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(LOAD_PROCESSES, mp_context=spawn) as pool:
        for tally in pool.map(_run_process, plans):
            total.add(tally)
    return total


# What a server connection is doing, from pg_stat_activity: the pool's idle
# connections are left out, and so is the sampler itself.
_ACTIVITY = """
SELECT state, wait_event_type, wait_event FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid()
  AND backend_type = 'client backend' AND state <> 'idle'
"""


def _what(state: str, wait_type: str | None, wait: str | None) -> str:
    if state.startswith("idle in transaction"):
        # The transaction waits for the server's next statement.
        return "idle in transaction"
    if wait_type == "Lock":
        return f"lock wait ({wait})"
    if wait in ("WALSync", "WALWrite", "WALInsert"):
        return "WAL flush"
    if wait_type is None:
        return "running"
    return f"{wait_type}: {wait}"


class Sampler:
    """Looks at the server's connections every SAMPLE_EVERY seconds from `since`
    (time.time()) until stopped, in a thread of its own; `counts` adds them up."""

    def __init__(self, url: str, since: float) -> None:
        self._dsn = asyncpg_dsn(url)
        self._since = since
        self._stop = threading.Event()
        self.samples = 0
        self.counts: Counter[str] = Counter()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    async def _run(self) -> None:
        connection = await asyncpg.connect(self._dsn)
        try:
            await asyncio.sleep(max(0.0, self._since - time.time()))
            while not self._stop.is_set():
                rows = await connection.fetch(_ACTIVITY)
                self.samples += 1
                self.counts.update(_what(*row) for row in rows)
                await asyncio.sleep(SAMPLE_EVERY)
        finally:
            await connection.close()


_ORDERS_IN = "SELECT count(*) FROM orders WHERE store_id = ANY($1::bigint[])"


async def _orders_in(url: str, stores: list[int]) -> int:
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        return int(await connection.fetchval(_ORDERS_IN, stores))
    finally:
        await connection.close()


@dataclass(frozen=True)
class Window:
    result: Result
    errors: dict[str, int]
    created: int
    waits: Counter[str]
    samples: int


def window(url: str, server: servers.Running, slots: list[Slot], scale: Scale) -> Window:
    """One window of the load on `slots`, with what the database saw."""
    stores = sorted({store for store, _ in slots})
    before = asyncio.run(_orders_in(url, stores))
    measure_from = time.time() + SPAWN_SECONDS + scale.warmup
    with (
        cpu_window(server.pid, SPAWN_SECONDS + scale.warmup) as cpu,
        Sampler(url, measure_from) as sampler,
    ):
        tally = _load(server.target, slots, scale)
    created = asyncio.run(_orders_in(url, stores)) - before
    result = Result(
        len(tally.latencies_ms),
        sum(tally.errors.values()),
        scale.duration,
        tally.latencies_ms,
        cpu(),
    )
    return Window(result, tally.errors, created, sampler.counts, sampler.samples)


# The outbox's trigger wakes the event relay with NOTIFY, and PostgreSQL lets one
# notifying transaction commit at a time (its queue's lock is held across the commit's
# WAL flush): every create of every store queues there. Without it, what is left is
# what stores share by design.
_DROP_NOTIFY_TRIGGER = "DROP TRIGGER IF EXISTS outbox_events_notify ON outbox_events"


async def _drop_notify_trigger(url: str) -> None:
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        await connection.execute(_DROP_NOTIFY_TRIGGER)
    finally:
        await connection.close()


def run(url: str, scale_name: str, *, workers: int, notify: bool = True) -> Report:
    scale = SCALES[scale_name]
    asyncio.run(_ensure_database(url, fresh=True))
    _migrate(url)
    if not notify:
        asyncio.run(_drop_notify_trigger(url))
    stores = asyncio.run(seed(url, scale.creators))
    report = Report(
        scale_name,
        machine=machine(),
        settings={
            "creators": scale.creators,
            "server_workers": workers,
            "outbox_notify": notify,
            "load_processes": LOAD_PROCESSES,
            "warmup_s": scale.warmup,
            "duration_s": scale.duration,
        },
    )
    windows: dict[str, list[Window]] = {load: [] for load in LOADS}
    with (
        tempfile.TemporaryDirectory(prefix="bench-logs-") as logs,
        servers.suite(url, stores.hot[0], Path(logs), bcrypt_rounds=4, workers=workers) as ours,
    ):
        for load in [*LOADS, *reversed(LOADS)]:
            windows[load].append(window(url, ours, stores.slots(load), scale))
    combined = {load: Result.combined([w.result for w in windows[load]]) for load in LOADS}
    for load in LOADS:
        measured = windows[load]
        samples = sum(w.samples for w in measured)
        waits = sum((w.waits for w in measured), Counter[str]())
        errors = sum((Counter(w.errors) for w in measured), Counter[str]())
        report.add(
            f"CreateOrder, {scale.creators} creators, "
            + ("one store" if load == "hot" else f"{scale.creators} stores"),
            ours.name,
            combined[load],
            load=load,
            created=sum(w.created for w in measured),
            error_codes=dict(errors),
            connections=_per_sample(waits, samples),
            ratio_to_spread=round(combined[load].per_second / combined["spread"].per_second, 3),
        )
    return report


def _per_sample(counts: Counter[str], samples: int) -> dict[str, float]:
    """How many of the server's connections were doing each thing, on average."""
    return {what: round(count / max(samples, 1), 2) for what, count in counts.most_common()}


def render(report: Report) -> str:
    lines = [
        f"{report.settings['creators']} concurrent creators,"
        f" {report.settings['server_workers']} server process(es),"
        f" outbox NOTIFY trigger {'on' if report.settings['outbox_notify'] else 'dropped'}",
        "",
        "| load | req/s | p50 ms | p99 ms | req/s vs spread | server connections, on average |",
        "|---|---|---|---|---|---|",
    ]
    for row in report.rows:
        doing = ", ".join(f"{what} {count}" for what, count in row["connections"].items())
        lines.append(
            f"| {row['scenario']} | {row['per_second']:,.0f} | {row['p50_ms']} |"
            f" {row['p99_ms']} | {row['ratio_to_spread']:.2f} | {doing} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = study.arguments(
        "hot_store",
        __doc__,
        database="commerce_bench_hot_store",
        database_help="a PostgreSQL database for the benchmark (dropped and made anew)",
    )
    parser.add_argument("--workers", type=int, default=1, help="server processes")
    parser.add_argument(
        "--without-notify",
        action="store_true",
        help="drop the outbox's NOTIFY trigger first (events then wait for the relay's "
        "next poll): measures the stores without the lock every notifying commit takes",
    )
    args = parser.parse_args(argv)
    url = sqlalchemy_url(args.database_url)
    report = run(url, study.scale(args), workers=args.workers, notify=not args.without_notify)
    return study.publish(report, render(report), args.json)


if __name__ == "__main__":
    sys.exit(main())
