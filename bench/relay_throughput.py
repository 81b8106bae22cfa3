"""How fast the event relay drains a backlog: events placed in the feed and published
to NATS JetStream per second.

Creates a throwaway PostgreSQL database, commits a backlog of events (in
transactions of 500, with no relay running), then starts one relay and times it
until every event is delivered; the stream it publishes to is deleted afterwards.

  .venv/bin/python -m bench.relay_throughput [--events 20000] [--no-nats]
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


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--no-nats", action="store_true", help="place only, publish nowhere")
    args = parser.parse_args()
    name = f"commerce_relay_bench_{uuid.uuid4().hex[:8]}"
    await _admin(f'CREATE DATABASE "{name}"')
    url = make_url(SERVER).set(drivername="postgresql+asyncpg", database=name)
    try:
        await asyncio.to_thread(upgrade, url.render_as_string(hide_password=False))
        rate = await measure(
            url.render_as_string(hide_password=False), args.events, not args.no_nats
        )
        what = "placed" if args.no_nats else "placed and published to JetStream"
        print(f"{args.events} events {what}: {rate:,.0f} events/s")
    finally:
        await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    asyncio.run(main())
