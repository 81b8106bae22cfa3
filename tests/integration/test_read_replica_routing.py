"""Where replica-tolerant reads go (TenantDatabase.reading_stale_ok) and how the probe
measures the replica's lag, against a real primary and its streaming replica
(tests.replication). A read names the server that answered it: inet_server_port()."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.replication import ReplicatedPair, with_driver
from services.core import consistency
from services.core.db.engine import create_engine
from services.core.db.replica import ReadReplica, ReplicaState
from services.core.db.statements import Statement
from services.core.db.unit_of_work import TenantDatabase, UnitOfWork
from tests.process import free_port, wait_for

SERVER_PORT = Statement(text("SELECT inet_server_port()"))


def served_by_primary() -> float:
    return (
        REGISTRY.get_sample_value("commerce_replica_tolerant_reads_total", {"served_by": "primary"})
        or 0.0
    )


class Clock:
    """The probe's clock, moved by the test: lag without waiting for it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def new_store(pair: ReplicatedPair) -> int:
    connection = await asyncpg.connect(pair.primary_url)
    try:
        store_id: int = await connection.fetchval(
            "INSERT INTO stores (name, is_active, created_at)"
            " VALUES ('replica routing', true, now()) RETURNING id"
        )
    finally:
        await connection.close()
    return store_id


async def caught_up(pair: ReplicatedPair) -> None:
    await asyncio.to_thread(wait_for, pair.caught_up)


async def server_port(uow: UnitOfWork) -> int:
    port: int = await uow.scalar(SERVER_PORT)
    return port


def replica_of(pair: ReplicatedPair, url: str, clock: Clock | None = None) -> ReadReplica:
    return ReadReplica(
        with_driver(url),
        primary_url=with_driver(pair.primary_url),
        max_lag_seconds=1.0,
        pool_size=2,
        connect_timeout=5.0,
        **({"clock": clock} if clock else {}),
    )


@pytest.fixture
async def primary(replicated_postgres: ReplicatedPair) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(with_driver(replicated_postgres.primary_url), pool_size=2)
    yield engine
    await engine.dispose()


async def test_an_idle_primary_does_not_make_the_replica_lag(replicated_postgres):
    clock = Clock()
    replica = replica_of(replicated_postgres, replicated_postgres.standby_url, clock)
    try:
        await new_store(replicated_postgres)
        await caught_up(replicated_postgres)
        assert await replica.probe() == ReplicaState(True, "", 0.0)
        clock.now += 3600  # an hour without a write: its last replayed commit is that old
        assert await replica.probe() == ReplicaState(True, "", 0.0)
    finally:
        await replica.close()


async def test_a_replica_that_stopped_replaying_lags_from_the_probe_that_saw_it_behind(
    replicated_postgres,
):
    clock = Clock()
    replica = replica_of(replicated_postgres, replicated_postgres.standby_url, clock)
    replicated_postgres.pause_replay()
    try:
        await new_store(replicated_postgres)
        assert (await replica.probe()).usable  # behind since just now
        clock.now += 5
        state = await replica.probe()
        assert not state.usable
        assert state.lag_seconds == 5.0
        assert "behind the primary" in state.reason
    finally:
        replicated_postgres.resume_replay()
    try:
        await caught_up(replicated_postgres)
        clock.now += 5
        assert await replica.probe() == ReplicaState(True, "", 0.0)
    finally:
        await replica.close()


async def test_reads_go_to_the_replica_unless_the_caller_asks_for_the_primary(
    replicated_postgres, primary
):
    database = TenantDatabase(primary)
    database.replica = replica_of(replicated_postgres, replicated_postgres.standby_url)
    try:
        store_id = await new_store(replicated_postgres)
        await caught_up(replicated_postgres)
        assert (await database.replica.probe()).usable
        assert await database.reading_stale_ok(store_id, server_port) == (
            replicated_postgres.standby_port
        )
        with consistency.required(True):
            assert await database.reading_stale_ok(store_id, server_port) == (
                replicated_postgres.primary_port
            )
        async with database.reading(store_id) as uow:  # the default: the primary
            assert await server_port(uow) == replicated_postgres.primary_port
    finally:
        await database.replica.close()


async def test_a_store_the_replica_does_not_have_yet_is_read_on_the_primary(
    replicated_postgres, primary
):
    database = TenantDatabase(primary)
    database.replica = replica_of(replicated_postgres, replicated_postgres.standby_url)
    try:
        assert (await database.replica.probe()).usable
        replicated_postgres.pause_replay()
        try:
            store_id = await new_store(replicated_postgres)
            # NOT_FOUND on the replica: asked again of the primary, which has it.
            assert await database.reading_stale_ok(store_id, server_port) == (
                replicated_postgres.primary_port
            )
            assert database.replica.usable  # a missing row says nothing of the replica
        finally:
            replicated_postgres.resume_replay()
    finally:
        await database.replica.close()


async def test_a_replica_out_of_reach_is_bypassed_within_the_call(replicated_postgres, primary):
    database = TenantDatabase(primary)
    # Nothing listens there; the replica is taken for usable, as just before it died.
    dead = replica_of(
        replicated_postgres, f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    )
    dead.state = ReplicaState(True, "", 0.0)
    database.replica = dead
    store_id = await new_store(replicated_postgres)
    before = served_by_primary()
    try:
        assert await database.reading_stale_ok(store_id, server_port) == (
            replicated_postgres.primary_port
        )
        assert not dead.usable
        assert dead.state.reason.startswith("unreachable")
        assert served_by_primary() == before + 1
    finally:
        await dead.close()


async def test_a_replica_whose_connections_are_all_in_use_is_busy_not_down(replicated_postgres):
    replica = replica_of(replicated_postgres, replicated_postgres.standby_url)
    held = [await replica.engine.connect() for _ in range(replica.engine.pool.size())]  # type: ignore[attr-defined]
    try:
        assert (await replica.probe()).usable
    finally:
        for connection in held:
            await connection.close()
        await replica.close()
