"""What domain events cost and how fast they travel: `python -m bench.events`.

Three scenarios, each on fresh databases of the PostgreSQL server given and a private
NATS server (bench.broker: own port, own store folder):

- create_order: CreateOrder throughput (h2load, one fixed guest order) of the suite
  with events published to NATS, against the same suite with COMMERCE_NATS_URL unset
  (events recorded and placed in the feed, nothing published) and against the commit
  before events existed (a throwaway copy of that git ref, migrated by its own
  code). Windows in the order on, off, before, before, off, on; each figure joins
  its two windows.
- relay: a backlog of orders created while no process relays (COMMERCE_EVENT_RELAY
  false), then `commerce relay` starts alone: events placed and published a second,
  from the stored time of the first message to the last (JetStream's own stamps),
  and the wall time from the relay's start to the last stored.
- latency: CreateOrder at a fixed open-loop rate while a JetStream consumer takes
  the OrderCreated messages; each event's latency is its arrival at the consumer
  less the time its CreateOrder returned to the client. The response comes just
  after the commit, so this approximates commit-to-stored-and-delivered; an event can
  arrive before its response (a negative latency, counted as such).

Every figure is measured in this run; nothing is asserted about time."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import nats
from commerce.orders.v1 import order_pb2
from commerce.orders.v1 import order_service_pb2 as orders_pb
from commerce.orders.v1 import order_service_pb2_grpc as orders_grpc
from nats.js.api import DeliverPolicy

from bench.broker import PrivateNats, ordered_subscription
from bench.measure import GRPC_HEADERS, H2Load, Result, grpc_frame
from bench.servers import ROOT, environment, free_port
from bench.urls import asyncpg_dsn, sqlalchemy_url

STREAM = "COMMERCE_EVENTS"
PREFIX = "commerce.events"
ORDER_CREATED_SUBJECT = f"{PREFIX}.1.orders.OrderCreated"
CREATE_ORDER = "/commerce.orders.v1.OrderService/CreateOrder"
# The modules a server of the commit before events mounts are the same: customers,
# orders, loyalty.
GOALS = {"ratio": 0.9, "relay_per_second": 5000.0, "p99_ms": 100.0}


@dataclass(frozen=True)
class Scale:
    warmup: float
    duration: float
    backlog: int
    rate: float  # orders a second of the latency scenario
    latency_seconds: float


SCALES = {
    "full": Scale(warmup=2, duration=10, backlog=20_000, rate=200, latency_seconds=30),
    "smoke": Scale(warmup=0.5, duration=1, backlog=300, rate=100, latency_seconds=2),
}


@dataclass
class Report:
    scale: str
    settings: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, **row: Any) -> None:
        self.rows.append(row)
        print(json.dumps(row), flush=True)


def guest_order() -> orders_pb.CreateOrderRequest:
    """The order every scenario places: a guest's, two lines."""
    return orders_pb.CreateOrderRequest(
        store_id=1,
        currency_code="EUR",
        contact_email="bench.events@example.com",
        line_items=[
            order_pb2.OrderLineItem(
                sku="EV-1", name="Bench mug", quantity=2, unit_price_minor=1250
            ),
            order_pb2.OrderLineItem(sku="EV-2", name="Bench tea", quantity=1, unit_price_minor=499),
        ],
    )


# --- databases and servers ------------------------------------------------------------


@contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    """A new, empty database on the PostgreSQL server of `server_url`; dropped after."""
    base = asyncpg_dsn(server_url).rsplit("/", 1)[0]
    name = f"commerce_bench_events_{uuid.uuid4().hex[:10]}"

    async def admin(sql: str) -> None:
        connection = await asyncpg.connect(f"{base}/postgres")
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        yield sqlalchemy_url(f"{base}/{name}")
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@dataclass(frozen=True)
class Code:
    """Which code a server runs: this checkout, or a throwaway copy of a git ref."""

    name: str
    root: Path

    def command(self, *arguments: str) -> list[str]:
        # The copy's own `services` package comes first on the path; the installed
        # dependencies (and generated stubs) are this environment's.
        run = "import sys; from services.cli import main; sys.exit(main())"
        return [sys.executable, "-c", run, *arguments]

    def env(self, **settings: str) -> dict[str, str]:
        return environment(PYTHONPATH=str(self.root), COMMERCE_LOG_LEVEL="WARNING", **settings)


THIS = Code("this checkout", ROOT)


def commit_before_events() -> str | None:
    """The parent of the commit that added the outbox; None where history is missing
    (a shallow clone)."""
    added = subprocess.run(
        ["git", "log", "--format=%H", "--diff-filter=A", "--", "services/core/db/outbox.py"],  # noqa: S607
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    ).stdout.split()
    if not added:
        return None
    parent = subprocess.run(  # noqa: S603 - git, given a commit id git printed
        ["git", "rev-parse", "--verify", "--quiet", f"{added[-1]}^"],  # noqa: S607
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    ).stdout.strip()
    return parent or None


@contextmanager
def checkout(ref: str) -> Iterator[Code]:
    """The tree of `ref` in a temporary folder (git archive: no worktree to forget)."""
    archive = subprocess.run(  # noqa: S603 - git archive of the ref the operator named
        ["git", "archive", "--format=tar", ref],  # noqa: S607
        capture_output=True,
        cwd=ROOT,
        check=True,
    ).stdout
    with tempfile.TemporaryDirectory(prefix="bench-ref-") as folder:
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(folder, filter="data")
        yield Code(f"commit {ref[:10]} (before events)", Path(folder))


def prepare(code: Code, url: str) -> None:
    """Migrates with the code's own migrations and creates store 1."""
    for arguments in (("migrate",), ("stores", "create", "--name", "Events bench")):
        subprocess.run(  # noqa: S603 - our own command
            code.command(*arguments),
            env=code.env(DATABASE_URL=url),
            cwd=code.root,
            check=True,
            capture_output=True,
        )


def _answers(target: str) -> bool:
    """Any answer but UNAVAILABLE: the server is up."""
    with grpc.insecure_channel(target) as channel:
        try:
            orders_grpc.OrderServiceStub(channel).GetOrder(
                orders_pb.GetOrderRequest(store_id=1, order_id=1), timeout=2
            )
        except grpc.RpcError as error:
            return error.code() not in (
                grpc.StatusCode.UNAVAILABLE,
                grpc.StatusCode.DEADLINE_EXCEEDED,
            )
    return True


@dataclass(frozen=True)
class Running:
    name: str
    pid: int
    target: str
    url: str


@contextmanager
def process(
    code: Code, command: str, env: dict[str, str], log_dir: Path, *, ready: str | None
) -> Iterator[subprocess.Popen[bytes]]:
    """`commerce <command>` of `code`; serving (when `ready` names its target) before
    the block runs, stopped after it."""
    log = log_dir / f"{command}-{uuid.uuid4().hex[:6]}.log"
    arguments = [command, "--listen-address", ready] if ready else [command]
    with log.open("w") as sink:
        child = subprocess.Popen(  # noqa: S603 - our own command
            code.command(*arguments), env=env, cwd=code.root, stdout=sink, stderr=sink
        )
    try:
        deadline = time.monotonic() + 60
        while ready and not _answers(ready):
            if child.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{command} did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield child
    finally:
        child.terminate()
        try:
            child.wait(15)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


@contextmanager
def server(name: str, code: Code, url: str, log_dir: Path, **settings: str) -> Iterator[Running]:
    prepare(code, url)
    target = f"127.0.0.1:{free_port()}"
    env = code.env(DATABASE_URL=url, **settings)
    with process(code, "serve", env, log_dir, ready=target) as child:
        yield Running(name, child.pid, target, url)


def nats_settings(broker: PrivateNats) -> dict[str, str]:
    return {
        "COMMERCE_NATS_URL": broker.url,
        "COMMERCE_NATS_STREAM": STREAM,
        "COMMERCE_NATS_SUBJECT_PREFIX": PREFIX,
    }


async def _count_orders(url: str) -> int:
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        return int(await connection.fetchval("SELECT count(*) FROM orders WHERE store_id = 1"))
    finally:
        await connection.close()


# --- (a) CreateOrder with events on and off -----------------------------------------


def create_order(report: Report, scale: Scale, database: str, before: str | None) -> None:
    load = H2Load(2, 16, scale.warmup, scale.duration)
    body = grpc_frame(guest_order().SerializeToString())
    with tempfile.TemporaryDirectory(prefix="bench-events-") as scratch:
        folder = Path(scratch)
        broker_dir = folder / "nats"
        broker_dir.mkdir()
        broker = PrivateNats(broker_dir)
        broker.start()
        try:
            with (
                fresh_database(database) as on_url,
                fresh_database(database) as off_url,
                fresh_database(database) as recorded_url,
                fresh_database(database) as before_url,
                server("events to NATS", THIS, on_url, folder, **nats_settings(broker)) as on,
                server("events, no NATS", THIS, off_url, folder) as off,
                server(
                    "events recorded, not relayed",
                    THIS,
                    recorded_url,
                    folder,
                    COMMERCE_EVENT_RELAY="false",
                ) as recorded,
                _before_server(before, before_url, folder, report) as old,
            ):
                targets = [on, off, recorded] + ([old] if old else [])
                windows: dict[str, list[Result]] = {t.name: [] for t in targets}
                created: dict[str, int] = {t.name: 0 for t in targets}
                for target in [*targets, *reversed(targets)]:
                    orders_before = asyncio.run(_count_orders(target.url))
                    windows[target.name].append(
                        load.run(
                            f"http://{target.target}{CREATE_ORDER}",
                            target.pid,
                            body=body,
                            headers=GRPC_HEADERS,
                        )
                    )
                    created[target.name] += asyncio.run(_count_orders(target.url)) - orders_before
                combined = {name: Result.combined(results) for name, results in windows.items()}
                for name, result in combined.items():
                    report.add(
                        scenario="CreateOrder",
                        target=name,
                        requests=result.requests,
                        created=created[name],  # h2load reads no gRPC status: the proof
                        per_second=round(result.per_second, 1),
                        p50_ms=round(result.percentile(0.5), 2),
                        p99_ms=round(result.percentile(0.99), 2),
                        cpu_ms_per_1000=round(result.cpu_ms_per_1000, 1),
                        errors=result.errors,
                    )
                events = combined[on.name].per_second
                for name, result in combined.items():
                    if name != on.name:
                        ratio = events / result.per_second
                        report.add(
                            scenario="CreateOrder ratio",
                            target=f"events to NATS / {name}",
                            ratio=round(ratio, 3),
                            goal=GOALS["ratio"],
                            met=ratio >= GOALS["ratio"],
                        )
        finally:
            broker.stop()


@contextmanager
def _before_server(
    ref: str | None, url: str, folder: Path, report: Report
) -> Iterator[Running | None]:
    if ref is None:
        report.notes.append("no commit before events in this clone's history: compared to off only")
        yield None
        return
    with checkout(ref) as code, server(code.name, code, url, folder) as running:
        yield running


# --- (b) the relay's throughput on a backlog ------------------------------------------


async def _create_many(target: str, count: int, concurrency: int = 32) -> None:
    numbers = iter(range(count))
    async with grpc.aio.insecure_channel(target) as channel:
        stub = orders_grpc.OrderServiceStub(channel)

        async def worker() -> None:
            for _ in numbers:
                await stub.CreateOrder(guest_order(), timeout=60)

        await asyncio.gather(*(worker() for _ in range(concurrency)))


async def _stored_times(url: str, subject: str, count: int, seconds: float) -> list[float]:
    """The stored time (JetStream's stamp, in seconds) of each of the first `count`
    messages on `subject`, waiting for them up to `seconds`."""
    deadline = time.monotonic() + seconds
    connection = await nats.connect(url, connect_timeout=10)
    try:
        stream = connection.jetstream(timeout=10)
        consumer = await ordered_subscription(stream, subject, deadline)
        if consumer is None:
            raise TimeoutError(f"no stream holds {subject}")
        stamps: list[float] = []
        while len(stamps) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{len(stamps)} of {count} events stored in time")
            try:
                message = await consumer.next_msg(timeout=min(left, 5))
            except nats.errors.TimeoutError:
                continue
            stamps.append(message.metadata.timestamp.timestamp())
        await consumer.unsubscribe()
        return stamps
    finally:
        await connection.close()


def relay(report: Report, scale: Scale, database: str) -> None:
    with (
        tempfile.TemporaryDirectory(prefix="bench-events-") as scratch,
        fresh_database(database) as url,
    ):
        folder = Path(scratch)
        (folder / "nats").mkdir()
        broker = PrivateNats(folder / "nats")
        broker.start()
        try:
            quiet = {"COMMERCE_EVENT_RELAY": "false"}
            with server("no relay", THIS, url, folder, **quiet) as writer:
                began = time.monotonic()
                asyncio.run(_create_many(writer.target, scale.backlog))
                backlog_seconds = time.monotonic() - began
            env = THIS.env(DATABASE_URL=url, **nats_settings(broker))
            started = time.time()
            with process(THIS, "relay", env, folder, ready=None):
                stamps = asyncio.run(
                    _stored_times(broker.url, ORDER_CREATED_SUBJECT, scale.backlog, 600)
                )
        finally:
            broker.stop()
    span = stamps[-1] - stamps[0]
    per_second = (len(stamps) - 1) / span if span > 0 else float("nan")
    report.add(
        scenario="Relay, backlog",
        target="commerce relay",
        events=len(stamps),
        backlog_created_in_s=round(backlog_seconds, 1),
        per_second=round(per_second, 1),
        wall_s_from_relay_start=round(stamps[-1] - started, 2),
        per_second_from_relay_start=round(len(stamps) / (stamps[-1] - started), 1),
        goal=GOALS["relay_per_second"],
        met=per_second >= GOALS["relay_per_second"],
    )


# --- (c) commit-to-JetStream latency at a fixed rate ----------------------------------


async def _latency(target: str, nats_url: str, rate: float, seconds: float) -> dict[str, Any]:
    arrivals: dict[str, float] = {}
    responses: dict[str, float] = {}
    errors: dict[str, int] = {}
    connection = await nats.connect(nats_url, connect_timeout=10)
    try:
        stream = connection.jetstream(timeout=10)
        await _wait_for_stream(stream)

        async def arrived(message: Any) -> None:
            arrivals[message.headers["ce-subject"]] = time.time()

        consumer = await stream.subscribe(
            ORDER_CREATED_SUBJECT,
            cb=arrived,
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.NEW,
        )
        async with grpc.aio.insecure_channel(target) as channel:
            stub = orders_grpc.OrderServiceStub(channel)

            async def place() -> None:
                try:
                    response = await stub.CreateOrder(guest_order(), timeout=30)
                except grpc.aio.AioRpcError as error:
                    errors[error.code().name] = errors.get(error.code().name, 0) + 1
                    return
                responses[f"orders/{response.order.order_id}"] = time.time()

            calls = []
            count = round(rate * seconds)
            start = time.monotonic() + 0.2
            late = 0
            for number in range(count):
                # Open loop: each call leaves at its time, whatever the earlier ones do.
                delay = start + number / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                elif delay < -0.01:
                    late += 1
                calls.append(asyncio.create_task(place()))
            await asyncio.gather(*calls)
        deadline = time.monotonic() + 60
        while not set(responses) <= set(arrivals) and time.monotonic() < deadline:  # noqa: ASYNC110 - a deadline, not an event
            await asyncio.sleep(0.05)
        await consumer.unsubscribe()
    finally:
        await connection.close()
    latencies = sorted(
        (arrivals[subject] - answered) * 1000
        for subject, answered in responses.items()
        if subject in arrivals
    )
    return {
        "orders": len(responses),
        "events": len(latencies),
        "missing": len(set(responses) - set(arrivals)),
        "errors": errors,
        "calls_sent_late": late,
        "negative": sum(1 for value in latencies if value < 0),
        "p50_ms": round(_percentile(latencies, 0.5), 2),
        "p99_ms": round(_percentile(latencies, 0.99), 2),
        "max_ms": round(latencies[-1], 2) if latencies else float("nan"),
    }


async def _wait_for_stream(stream: Any) -> None:
    """The server creates the stream when its relay starts."""
    deadline = time.monotonic() + 60
    while True:
        try:
            await stream.stream_info(STREAM)
            return
        except nats.js.errors.NotFoundError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


def _percentile(ordered: list[float], share: float) -> float:
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def latency(report: Report, scale: Scale, database: str) -> None:
    with (
        tempfile.TemporaryDirectory(prefix="bench-events-") as scratch,
        fresh_database(database) as url,
    ):
        folder = Path(scratch)
        (folder / "nats").mkdir()
        broker = PrivateNats(folder / "nats")
        broker.start()
        try:
            with server("events to NATS", THIS, url, folder, **nats_settings(broker)) as running:
                # A first order makes the relay create the stream before the clock runs.
                asyncio.run(_create_many(running.target, 1, 1))
                figures = asyncio.run(
                    _latency(running.target, broker.url, scale.rate, scale.latency_seconds)
                )
        finally:
            broker.stop()
    report.add(
        scenario=f"Commit to JetStream, {scale.rate:g} orders/s",
        target="events to NATS",
        **figures,
        goal_p99_ms=GOALS["p99_ms"],
        met=figures["p99_ms"] <= GOALS["p99_ms"],
    )


# --- the command --------------------------------------------------------------------


def render(report: Report) -> str:
    lines = [f"Scale: {report.scale}; settings: {json.dumps(report.settings)}", ""]
    for row in report.rows:
        lines.append("- " + ", ".join(f"{key}: {value}" for key, value in row.items()))
    lines += [f"- note: {note}" for note in report.notes]
    return "\n".join(lines)


SCENARIOS = ("create_order", "relay", "latency")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.events", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny and short: does it all work?")
    parser.add_argument(
        "--database-url",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="a PostgreSQL server (any database of it): each scenario makes its own",
    )
    parser.add_argument(
        "--scenario", choices=SCENARIOS, action="append", help="only these (default: all)"
    )
    parser.add_argument(
        "--before-ref",
        help="git ref of the code without events (default: the parent of the commit "
        "that added the outbox)",
    )
    parser.add_argument("--backlog", type=int, help="events in the relay's backlog")
    parser.add_argument("--rate", type=float, help="orders a second of the latency scenario")
    parser.add_argument("--json", help="write every figure to this JSON file")
    args = parser.parse_args(argv)
    scale_name = "smoke" if args.smoke else "full"
    scale = SCALES[scale_name]
    if args.backlog:
        scale = Scale(**(asdict(scale) | {"backlog": args.backlog}))
    if args.rate:
        scale = Scale(**(asdict(scale) | {"rate": args.rate}))
    before = args.before_ref or commit_before_events()
    report = Report(
        scale_name, settings=asdict(scale) | {"before_ref": before, "cpus": os.cpu_count()}
    )
    chosen = args.scenario or list(SCENARIOS)
    if "create_order" in chosen:
        create_order(report, scale, args.database_url, before)
    if "relay" in chosen:
        relay(report, scale, args.database_url)
    if "latency" in chosen:
        latency(report, scale, args.database_url)
    print(render(report))
    if args.json:
        Path(args.json).write_text(json.dumps(asdict(report), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
