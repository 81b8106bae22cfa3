"""Reads with a read replica: `python -m bench.read_replica`.

Makes a private PostgreSQL primary and its streaming replica (bench.replication: two
clusters on ports of their own, never the shared server), seeds a store on the
primary (bench.seed), then starts the suite (`commerce serve`) twice on it: on the
primary alone, and with read_database_url set to the replica. Both run at once and get
the same mixed load from this process in turn, in alternating windows (CONCURRENCY
calls in flight, each drawn from MIX: lists and statistics, which may go to the
replica, gets and writes, which never do). It reports calls per second of each
kind, the errors, and the share of the replica-tolerant reads the replica served (the
server's /metrics).

Then, with the replica and a load of lists only, it stops the replica (pg_ctlcluster
stop -m immediate) and measures the time until no read reached it any more (its
/metrics counter stopped) and until health said NOT_SERVING for commerce.read_replica,
and counts the calls that failed meanwhile (none should).

Everything runs on one machine: the replica competes with the primary, the server and
this load for the same cores, so "with replica" cannot show the capacity a replica on
its own machine adds; and the figures of a shared machine are noisy. Nothing is
asserted about time.

Usage: python -m bench.read_replica [--smoke] [--json FILE]"""

from __future__ import annotations

import asyncio
import random
import re
import sys
import tempfile
import time
import urllib.request
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import bcrypt
import grpc
from commerce.customers.v1 import customer_pb2
from commerce.customers.v1 import customer_service_pb2 as customers_pb
from commerce.customers.v1 import customer_service_pb2_grpc as customers_grpc
from commerce.orders.v1 import customer_order_service_pb2 as customer_orders_pb
from commerce.orders.v1 import customer_order_service_pb2_grpc as customer_orders_grpc
from google.protobuf import field_mask_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench import servers, study
from bench.replication import ReplicatedPair, replication_available, with_driver
from bench.run import machine
from bench.seed import SeededStore, seed_store
from services.migrations import upgrade

CONCURRENCY = 16
# kind: (share of the calls, replica-tolerant)
MIX = {
    "ListCustomers": 0.40,
    "GetCustomerOrderCount": 0.20,
    "GetCustomer": 0.30,
    "UpdateCustomer": 0.10,
}
TOLERANT = {"ListCustomers", "GetCustomerOrderCount"}
READ_REPLICA = "commerce.read_replica"
_READS_LINE = re.compile(
    r'^commerce_replica_tolerant_reads_total\{served_by="(\w+)"\} ([0-9.e+]+)$', re.M
)


@dataclass(frozen=True)
class Scale:
    customers: int
    orders: int
    warmup: float
    duration: float  # of each server's load, over all its windows
    windows: int


SCALES = {
    "full": Scale(20_000, 60_000, warmup=3, duration=30, windows=6),
    "smoke": Scale(300, 600, warmup=0.3, duration=1, windows=2),
}


@dataclass
class LoadResult:
    seconds: float
    calls: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    served_by: dict[str, float] = field(default_factory=dict)

    def add(self, other: LoadResult) -> None:
        self.seconds += other.seconds
        for mine, theirs in (
            (self.calls, other.calls),
            (self.errors, other.errors),
            (self.served_by, other.served_by),
        ):
            for key, value in theirs.items():
                mine[key] = mine.get(key, 0) + value  # type: ignore[assignment]

    @property
    def per_second(self) -> dict[str, float]:
        return {kind: round(n / self.seconds, 1) for kind, n in self.calls.items()}


@dataclass
class Report:
    scale: str
    machine: dict[str, str]
    settings: dict[str, Any]
    loads: dict[str, dict[str, Any]] = field(default_factory=dict)
    fallback: dict[str, Any] = field(default_factory=dict)


def served_by(metrics_port: int) -> dict[str, float]:
    """The server's replica-tolerant reads so far, by who served them."""
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return {who: float(n) for who, n in _READS_LINE.findall(text)}


class Calls:
    """One call of each kind of MIX against a running suite."""

    def __init__(self, channel: grpc.aio.Channel, store: SeededStore) -> None:
        self.customers = customers_grpc.CustomerServiceStub(channel)
        self.customer_orders = customer_orders_grpc.CustomerOrderServiceStub(channel)
        self.store = store

    def _customer(self) -> int:
        return random.randint(1, self.store.customers)  # noqa: S311 - load, not secrets

    async def call(self, kind: str) -> None:
        store_id = self.store.store_id
        if kind == "ListCustomers":
            await self.customers.ListCustomers(
                customers_pb.ListCustomersRequest(store_id=store_id, page_size=20), timeout=30
            )
        elif kind == "GetCustomerOrderCount":
            await self.customer_orders.GetCustomerOrderCount(
                customer_orders_pb.GetCustomerOrderCountRequest(
                    store_id=store_id, customer_id=self.store.typical_customer_id
                ),
                timeout=30,
            )
        elif kind == "GetCustomer":
            await self.customers.GetCustomer(
                customers_pb.GetCustomerRequest(store_id=store_id, customer_id=self._customer()),
                timeout=30,
            )
        else:
            await self.customers.UpdateCustomer(
                customers_pb.UpdateCustomerRequest(
                    store_id=store_id,
                    customer_id=self._customer(),
                    customer=customer_pb2.Customer(first_name=f"Bench{random.randint(0, 999)}"),  # noqa: S311
                    update_mask=field_mask_pb2.FieldMask(paths=["first_name"]),
                ),
                timeout=30,
            )


async def _worker(
    calls: Calls, kinds: list[str], weights: list[float], until: float, result: LoadResult
) -> None:
    """Calls until `until` (or cancelled), each counted in `result` as it ends."""
    loop = asyncio.get_running_loop()
    while loop.time() < until:
        kind = random.choices(kinds, weights)[0]  # noqa: S311
        try:
            await calls.call(kind)
            result.calls[kind] = result.calls.get(kind, 0) + 1
        except grpc.aio.AioRpcError as error:
            failure = f"{kind} {error.code().name}"
            result.errors[failure] = result.errors.get(failure, 0) + 1


async def load(
    target: str,
    store: SeededStore,
    mix: dict[str, float],
    seconds: float,
    metrics_port: int,
    *,
    warmup: float,
) -> LoadResult:
    """CONCURRENCY calls in flight for `seconds`, each of a kind drawn from `mix`,
    after `warmup` seconds of the same."""
    async with grpc.aio.insecure_channel(target) as channel:
        calls = Calls(channel, store)
        until = asyncio.get_running_loop().time() + warmup
        ignored = LoadResult(warmup)
        await asyncio.gather(
            *(_worker(calls, list(mix), list(mix.values()), until, ignored) for _ in range(8))
        )
        before = served_by(metrics_port)
        result = LoadResult(seconds)
        until = asyncio.get_running_loop().time() + seconds
        await asyncio.gather(
            *(
                _worker(calls, list(mix), list(mix.values()), until, result)
                for _ in range(CONCURRENCY)
            )
        )
    after = served_by(metrics_port)
    result.served_by = {who: after[who] - before.get(who, 0.0) for who in after}
    return result


async def _replica_health(channel: grpc.aio.Channel) -> int:
    stub: Any = health_pb2_grpc.HealthStub(channel)  # grpc-health ships no stub types
    response = await stub.Check(health_pb2.HealthCheckRequest(service=READ_REPLICA), timeout=5)
    return int(response.status)


async def fallback(
    target: str, store: SeededStore, pair: ReplicatedPair, metrics_port: int
) -> dict[str, Any]:
    """Stops the replica under a load of lists; how long until reads stopped reaching
    it and health said so, and the calls that failed meanwhile."""
    result = LoadResult(0)
    async with grpc.aio.insecure_channel(target) as channel:
        calls = Calls(channel, store)
        await _until_replica_serving(channel)
        forever = asyncio.get_running_loop().time() + 3600  # cancelled below
        readers = [
            asyncio.create_task(_worker(calls, ["ListCustomers"], [1.0], forever, result))
            for _ in range(CONCURRENCY)
        ]
        try:
            await asyncio.sleep(0.5)  # the load settles on the replica
            replica_reads = served_by(metrics_port).get("replica", 0.0)
            stopped = time.monotonic()
            await asyncio.to_thread(pair.stop_standby)
            stop_took = time.monotonic() - stopped
            last_replica_read = stopped
            health_after = None
            quiet_since = time.monotonic()
            # Until health said so and the replica served nothing for 2 s.
            while health_after is None or time.monotonic() - quiet_since < 2:
                now = served_by(metrics_port).get("replica", 0.0)
                if now != replica_reads:
                    replica_reads, last_replica_read = now, time.monotonic()
                    quiet_since = last_replica_read
                if health_after is None and await _replica_health(channel) != (
                    health_pb2.HealthCheckResponse.SERVING
                ):
                    health_after = time.monotonic() - stopped
                await asyncio.sleep(0.02)
        finally:
            for reader in readers:
                reader.cancel()
            await asyncio.gather(*readers, return_exceptions=True)
            await asyncio.to_thread(pair.start_standby)
    return {
        "pg_ctlcluster_stop_s": round(stop_took, 3),
        "last_replica_read_after_stop_s": round(max(0.0, last_replica_read - stopped), 3),
        "health_not_serving_after_stop_s": round(health_after or 0.0, 3),
        "calls_during": sum(result.calls.values()),
        "failed_calls": sum(result.errors.values()),
        "errors": result.errors,
    }


def run(scale_name: str) -> Report:
    scale = SCALES[scale_name]
    pair = ReplicatedPair("commerce_replica_bench")
    pair.create()
    try:
        url = with_driver(pair.primary_url)
        upgrade(url)
        password_hash = bcrypt.hashpw(b"bench password", bcrypt.gensalt(4)).decode()
        store = asyncio.run(
            seed_store(
                url,
                customers=scale.customers,
                orders=scale.orders,
                big_customer_orders=min(1000, scale.orders // 10),
                password_hash=password_hash,
            )
        )
        pair.wait_until_streaming()
        report = Report(
            scale_name,
            machine(),
            {
                "store": asdict(store),
                "concurrency": CONCURRENCY,
                "mix": MIX,
                "duration_s": scale.duration,
                "windows": scale.windows,
                "read_replica_max_lag_seconds": 2.0,
                "health_check_interval": 0.2,
            },
        )
        probe = (store.store_id, store.typical_customer_id)
        replica = {"COMMERCE_READ_DATABASE_URL": with_driver(pair.standby_url)}
        with tempfile.TemporaryDirectory(prefix="bench-logs-") as logs, ExitStack() as stack:
            # Both servers run at once, on the same primary; the load goes to one at a
            # time, in alternating windows (A B B A ...), so that a drift of the shared
            # machine weighs on both alike.
            started: dict[str, tuple[servers.Running, int]] = {}
            for name, extra in (("primary only", {}), ("with replica", replica)):
                metrics_port = servers.free_port()
                settings = {
                    "COMMERCE_METRICS_ADDRESS": f"127.0.0.1:{metrics_port}",
                    "COMMERCE_HEALTH_CHECK_INTERVAL": "0.2",
                    "COMMERCE_LOG_LEVEL": "WARNING",
                    **extra,
                }
                running = stack.enter_context(
                    servers.suite(
                        url, probe, Path(logs), bcrypt_rounds=4, settings=settings, name=name
                    )
                )
                started[name] = (running, metrics_port)
            asyncio.run(_wait_replica_serving(started["with replica"][0].target))
            results = {name: LoadResult(0) for name in started}
            order = list(started)
            for window in range(scale.windows):
                for name in order if window % 2 == 0 else reversed(order):
                    running, metrics_port = started[name]
                    one = asyncio.run(
                        load(
                            running.target,
                            store,
                            MIX,
                            scale.duration / scale.windows,
                            metrics_port,
                            warmup=scale.warmup if window == 0 else 0.0,
                        )
                    )
                    results[name].add(one)
            for name, result in results.items():
                report.loads[name] = {
                    "calls_per_second": result.per_second,
                    "reads_per_second": round(
                        sum(n for k, n in result.calls.items() if k != "UpdateCustomer")
                        / result.seconds,
                        1,
                    ),
                    "errors": result.errors,
                    "tolerant_reads_served_by": result.served_by,
                }
            running, metrics_port = started["with replica"]
            report.fallback = asyncio.run(fallback(running.target, store, pair, metrics_port))
    finally:
        pair.drop()
    return report


async def _wait_replica_serving(target: str) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        await _until_replica_serving(channel)


async def _until_replica_serving(channel: grpc.aio.Channel) -> None:
    async with asyncio.timeout(60):
        # Seen only through the server's health service: polled.
        while await _replica_health(channel) != health_pb2.HealthCheckResponse.SERVING:  # noqa: ASYNC110
            await asyncio.sleep(0.05)


def render(report: Report) -> str:
    lines = [
        f"store: {report.settings['store']['customers']:,} customers,"
        f" {report.settings['store']['orders']:,} orders; {CONCURRENCY} calls in flight;"
        f" {report.settings['duration_s']} s each",
        "",
        "| server | reads/s | calls/s by kind | tolerant reads on replica | errors |",
        "|---|---|---|---|---|",
    ]
    for name, figures in report.loads.items():
        by = figures["tolerant_reads_served_by"]
        total = sum(by.values()) or 1.0
        share = by.get("replica", 0.0) / total
        lines.append(
            f"| {name} | {figures['reads_per_second']:,.0f} | {figures['calls_per_second']} |"
            f" {share:.0%} | {figures['errors'] or 0} |"
        )
    lines += ["", f"replica stopped under load: {report.fallback}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = study.arguments("read_replica", __doc__, database=None).parse_args(argv)
    if not replication_available():
        print("needs Debian's postgresql-common (pg_createcluster)", file=sys.stderr)
        return 2
    report = run(study.scale(args))
    return study.publish(report, render(report), args.json)


if __name__ == "__main__":
    sys.exit(main())
