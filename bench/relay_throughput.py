"""How fast the event relay drains a backlog: events placed in the feed and published
to NATS JetStream per second.

Creates a throwaway PostgreSQL database, commits a backlog of events (in
transactions of 500, with no relay running), then starts one relay and times it
until every event is delivered; the stream it publishes to is deleted afterwards.

  .venv/bin/python -m bench.relay_throughput [--events 20000] [--no-nats]

With --latency RATE it measures instead how long an event takes from its commit to
a JetStream consumer, committing one event at a time at RATE per second from another
engine than the relay's (as another process: the relay learns of it by NOTIFY).

  .venv/bin/python -m bench.relay_throughput --latency 200 [--events 4000]
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from dataclasses import dataclass
from typing import ClassVar

import asyncpg
import nats
from nats.aio.msg import Msg
from nats.js.errors import NotFoundError
from sqlalchemy import text
from sqlalchemy.engine import make_url

from services.core.db.engine import create_engine
from services.core.db.outbox import DomainEvent
from services.core.db.stores import create_store
from services.core.db.unit_of_work import TenantDatabase
from services.core.events.relay import EventRelay
from services.core.events.signals import Signal
from services.core.settings import Settings
from services.migrations import upgrade

SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
NATS_URL = "nats://127.0.0.1:4222"
# About the size of an OrderCreated payload with two line items.
PAYLOAD = bytes(400)


@dataclass(frozen=True)
class Measured(DomainEvent):
    module: ClassVar[str] = "bench"
    n: int

    @property
    def subject(self) -> str:
        return f"things/{self.n % 100}"


async def _admin(sql: str) -> None:
    connection = await asyncpg.connect(SERVER)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


async def measure(url: str, events: int, use_nats: bool) -> float:
    tag = uuid.uuid4().hex[:8]
    stream, prefix = f"BENCH_{tag}", f"bench{tag}.events"
    settings = Settings(
        database_url=url,
        nats_url=NATS_URL if use_nats else "",
        nats_stream=stream,
        nats_subject_prefix=prefix,
    )
    database = TenantDatabase(create_engine(url, pool_size=4))
    database.event_encoders.register(Measured, lambda _event: ("bench.v1.Measured", PAYLOAD))
    async with database.maintenance() as statements:
        store_id = (await create_store(statements, "bench")).id
        await statements.commit()
    for start in range(0, events, 500):
        async with database.writing(store_id) as uow:
            for n in range(start, min(start + 500, events)):
                uow.record(Measured(n))
            await uow.commit()
    relay = EventRelay(database, settings, events_committed=Signal(), events_placed=Signal())
    started = time.perf_counter()
    relay.start()
    try:
        while True:
            async with database.engine.connect() as connection:
                delivered = await connection.scalar(
                    text("SELECT delivered_position FROM event_relay")
                )
            if delivered == events:
                break
            await asyncio.sleep(0.01)
        elapsed = time.perf_counter() - started
    finally:
        await relay.stop()
        await database.engine.dispose()
        if use_nats:
            client = await nats.connect(NATS_URL)
            try:
                stored = (await client.jetstream().stream_info(stream)).state.messages
                assert stored == events, f"{stored} of {events} events in the stream"
                await client.jetstream().delete_stream(stream)
            except NotFoundError:
                pass
            await client.close()
    return events / elapsed


async def latency(url: str, events: int, rate: float) -> tuple[float, float]:
    """p50 and p99, in milliseconds, from commit to a consumer."""
    tag = uuid.uuid4().hex[:8]
    stream, prefix = f"BENCH_{tag}", f"bench{tag}.events"
    settings = Settings(
        database_url=url, nats_url=NATS_URL, nats_stream=stream, nats_subject_prefix=prefix
    )
    relay_database = TenantDatabase(create_engine(url, pool_size=4))
    writer = TenantDatabase(create_engine(url, pool_size=2))
    writer.event_encoders.register(
        Measured, lambda event: ("bench.v1.Measured", str(event.n).encode())
    )
    async with writer.maintenance() as statements:
        store_id = (await create_store(statements, "bench")).id
        await statements.commit()
    relay = EventRelay(relay_database, settings, events_committed=Signal(), events_placed=Signal())
    relay.start()
    client = await nats.connect(NATS_URL)
    jetstream = client.jetstream()
    committed: dict[int, float] = {}
    latencies: list[float] = []
    done = asyncio.Event()

    async def received(message: Msg) -> None:
        latencies.append(time.perf_counter() - committed[int(message.data)])
        if len(latencies) == events:
            done.set()

    try:
        while True:  # until the relay made the stream
            try:
                await jetstream.stream_info(stream)
                break
            except NotFoundError:
                await asyncio.sleep(0.05)
        await jetstream.subscribe(f"{prefix}.>", cb=received, ordered_consumer=True)
        started = time.perf_counter()
        for n in range(events):
            async with writer.writing(store_id) as uow:
                uow.record(Measured(n))
                await uow.commit()
            committed[n] = time.perf_counter()
            await asyncio.sleep(max(0.0, started + (n + 1) / rate - time.perf_counter()))
        await asyncio.wait_for(done.wait(), 60)
    finally:
        await relay.stop()
        await jetstream.delete_stream(stream)
        await client.close()
        await relay_database.engine.dispose()
        await writer.engine.dispose()
    latencies.sort()
    return latencies[len(latencies) // 2] * 1000, latencies[int(len(latencies) * 0.99)] * 1000


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--no-nats", action="store_true", help="place only, publish nowhere")
    parser.add_argument("--latency", type=float, help="events per second: measure latency")
    args = parser.parse_args()
    name = f"commerce_relay_bench_{uuid.uuid4().hex[:8]}"
    await _admin(f'CREATE DATABASE "{name}"')
    url = make_url(SERVER).set(drivername="postgresql+asyncpg", database=name)
    try:
        await asyncio.to_thread(upgrade, url.render_as_string(hide_password=False))
        database = url.render_as_string(hide_password=False)
        if args.latency:
            p50, p99 = await latency(database, args.events, args.latency)
            print(
                f"{args.events} events at {args.latency:g}/s, commit to consumer: "
                f"p50 {p50:.1f} ms, p99 {p99:.1f} ms"
            )
            return
        rate = await measure(database, args.events, not args.no_nats)
        what = "placed" if args.no_nats else "placed and published to JetStream"
        print(f"{args.events} events {what}: {rate:,.0f} events/s")
    finally:
        await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    asyncio.run(main())
