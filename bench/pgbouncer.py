"""GetCustomer and CreateOrder straight to PostgreSQL and through PgBouncer in
pool_mode=transaction: `python -m bench.pgbouncer`.

Seeds (once; reused after, as bench.run does) a store of 100,000 customers, then
starts the suite (`commerce serve`, 4 worker processes of 5 database connections
each) three times on the same database, all running at once (44 connections to
PostgreSQL in all: its default max_connections is 100):

- direct: 20 server connections, each statement prepared once per connection;
- through a private PgBouncer with as many server connections (20), with
  database_pooler=transaction: what losing prepared statements and the extra hop
  cost;
- through a private PgBouncer with 4 server connections for the 20 client ones:
  what a pool that small costs on top.

Each scenario is loaded with h2load (32 calls in flight, as bench.run) in the order
A B C C B A, each figure the two windows together, and printed with its ratio to
direct. CreateOrder's orders are counted in the database (h2load reads no gRPC
status). Nothing is asserted about time.

Usage: python -m bench.pgbouncer [--database-url URL] [--smoke] [--json FILE]"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from commerce.customers.v1 import customer_service_pb2 as customers_pb

from bench import loadgen, servers, study
from bench.measure import Result
from bench.pooler import PrivatePgBouncer
from bench.run import Bench, Report, Scale, Unary, machine, prepared_store
from bench.urls import sqlalchemy_url

_CUSTOMERS = "/commerce.customers.v1.CustomerService/"
_ORDERS = "/commerce.orders.v1.OrderService/"

# Customers only (and the orders the runs place): orders seeded play no part here.
SCALES = {
    "full": Scale(100_000, 0, 0, warmup=2, duration=10, bcrypt_rounds=4),
    "smoke": Scale(2_000, 0, 0, warmup=0.5, duration=1, bcrypt_rounds=4),
}


@dataclass(frozen=True)
class Setup:
    """How the suite reaches the database."""

    name: str
    workers: int
    connections_per_worker: int
    server_connections: int  # PgBouncer's pool for the database; 0: no PgBouncer


def setups(scale_name: str) -> list[Setup]:
    workers, per_worker = (4, 5) if scale_name == "full" else (2, 2)
    clients = workers * per_worker
    return [
        Setup("direct", workers, per_worker, 0),
        Setup(f"pgbouncer, {clients} server connections", workers, per_worker, clients),
        Setup(f"pgbouncer, {workers} server connections", workers, per_worker, workers),
    ]


def scenarios(store_id: int, customer_id: int) -> dict[str, Unary]:
    return {
        "GetCustomer": Unary(
            _CUSTOMERS + "GetCustomer",
            customers_pb.GetCustomerRequest(store_id=store_id, customer_id=customer_id),
        ),
        "CreateOrder": Unary(_ORDERS + "CreateOrder", loadgen.order_request(store_id, customer_id)),
    }


@contextmanager
def serving(
    url: str, setup: Setup, probe: tuple[int, int], logs: Path, scale: Scale
) -> Iterator[servers.Running]:
    """The suite as `setup` says, and its PgBouncer if it has one."""
    settings = {"COMMERCE_DB_POOL_SIZE": str(setup.connections_per_worker)}
    with ExitStack() as stack:
        if setup.server_connections:
            pooler = PrivatePgBouncer(url, pool_size=setup.server_connections)
            pooler.start()
            stack.callback(pooler.stop)
            url = pooler.url(url)
            settings["COMMERCE_DATABASE_POOLER"] = "transaction"
        yield stack.enter_context(
            servers.suite(
                url,
                probe,
                logs,
                bcrypt_rounds=scale.bcrypt_rounds,
                workers=setup.workers,
                name=setup.name,
                settings=settings,
            )
        )


def run(url: str, scale_name: str) -> Report:
    scale = SCALES[scale_name]
    store = prepared_store(url, scale, reseed=False)
    chosen = setups(scale_name)
    report = Report(
        scale_name,
        machine=machine(),
        settings={"store": asdict(store), "setups": [asdict(setup) for setup in chosen]}
        | {"warmup_s": scale.warmup, "duration_s": scale.duration},
    )
    bench = Bench(url, scale, store, report)
    probe = (store.store_id, store.typical_customer_id)
    calls = scenarios(store.store_id, store.typical_customer_id)
    with tempfile.TemporaryDirectory(prefix="bench-logs-") as logs, ExitStack() as stack:
        running = [
            stack.enter_context(serving(url, setup, probe, Path(logs), scale)) for setup in chosen
        ]
        for name, call in calls.items():
            windows: dict[str, list[Result]] = {server.name: [] for server in running}
            created: dict[str, int] = dict.fromkeys(windows, 0)
            for server in [*running, *reversed(running)]:
                result, extra = bench._unary(call, server, bench.load)
                windows[server.name].append(result)
                created[server.name] += extra.get("created", 0)
            combined = {server: Result.combined(results) for server, results in windows.items()}
            direct = combined[running[0].name].per_second
            for server_name, result in combined.items():
                extra = {"created": created[server_name]} if call.is_create else {}
                report.add(
                    name,
                    server_name,
                    result,
                    ratio_to_direct=round(result.per_second / direct, 3),
                    **extra,
                )
    return report


def render(report: Report) -> str:
    lines = [
        f"store: {report.settings['store']['customers']:,} customers; suite: "
        f"{report.settings['setups'][0]['workers']} workers of "
        f"{report.settings['setups'][0]['connections_per_worker']} connections",
        "",
        "| scenario | setup | req/s | p50 ms | p99 ms | CPU ms / 1000 | vs direct | errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in report.rows:
        lines.append(
            f"| {row['scenario']} | {row['target']} | {row['per_second']:,.0f} |"
            f" {row['p50_ms']} | {row['p99_ms']} | {row['cpu_ms_per_1000']} |"
            f" {row['ratio_to_direct']:.2f} | {row['errors']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = study.arguments("pgbouncer", __doc__, database="commerce_bench_pgbouncer")
    args = parser.parse_args(argv)
    report = run(sqlalchemy_url(args.database_url), study.scale(args))
    return study.publish(report, render(report), args.json)


if __name__ == "__main__":
    sys.exit(main())
