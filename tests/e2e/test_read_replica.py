"""The server with a read replica (read_database_url), against a private primary and
its real streaming replica (tests.replication; never the shared server): lists and
statistics are read on the replica, gets on the primary; a replica that falls behind
or stops is bypassed (health says so, no call fails) and serves again once it is back.

Which server answered is proved with the replica's replay paused: a write on the
primary is then missing from what the replica serves, and nowhere else."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable

import grpc
import pytest
from commerce.customers.v1 import customer_pb2, customer_service_pb2_grpc
from commerce.orders.v1 import (
    customer_order_service_pb2,
    customer_order_service_pb2_grpc,
    order_service_pb2,
    order_service_pb2_grpc,
)
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY

from bench.replication import ReplicatedPair, sql, with_driver
from services.core.settings import Settings
from services.server import READ_REPLICA_HEALTH
from tests.conftest import TEST_BCRYPT_ROUNDS
from tests.e2e.helpers import create_customer, create_order, pb, serving
from tests.process import wait_for

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
STRONG = (("x-commerce-consistency", "strong"),)


def replica_settings(pair: ReplicatedPair, *, max_lag: float) -> Settings:
    return Settings(
        database_url=with_driver(pair.primary_url),
        read_database_url=with_driver(pair.standby_url),
        read_replica_max_lag_seconds=max_lag,
        health_check_interval=0.1,
        bcrypt_rounds=TEST_BCRYPT_ROUNDS,
        page_token_secret="test-page-token-secret",
        listen_address="127.0.0.1:0",
        db_pool_size=5,
        event_relay=False,
    )


def reads(served_by: str) -> float:
    return (
        REGISTRY.get_sample_value("commerce_replica_tolerant_reads_total", {"served_by": served_by})
        or 0.0
    )


async def health(channel: grpc.aio.Channel, service: str = READ_REPLICA_HEALTH) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    response = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    return int(response.status)


async def _is(status: Awaitable[int], wanted: int) -> bool:
    return await status == wanted


async def until(condition, within: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    """Waits for an async condition (a busy CI machine may take long)."""
    async with asyncio.timeout(within):
        while not await condition():  # noqa: ASYNC110 (seen only through the server)
            await asyncio.sleep(0.05)


async def caught_up(pair: ReplicatedPair) -> None:
    await asyncio.to_thread(wait_for, pair.caught_up, 60)


@pytest.fixture
async def replicated_store(replicated_postgres: ReplicatedPair) -> int:
    """A store on the primary that the replica has too."""
    store_id = int(
        sql(
            replicated_postgres.primary_url,
            "INSERT INTO stores (name, is_active, created_at)"
            " VALUES ('read replica', true, now()) RETURNING id",
        )
    )
    await caught_up(replicated_postgres)
    return store_id


@contextlib.asynccontextmanager
async def replay_paused(pair: ReplicatedPair) -> AsyncIterator[None]:
    pair.pause_replay()
    try:
        yield
    finally:
        pair.resume_replay()


async def listed_ids(customers: customer_service_pb2_grpc.CustomerServiceStub, store_id: int, **kw):  # type: ignore[no-untyped-def]
    response = await customers.ListCustomers(
        pb.ListCustomersRequest(store_id=store_id, page_size=100), **kw
    )
    return {customer.customer_id for customer in response.customers}


async def test_lists_and_statistics_read_the_replica_and_gets_the_primary(
    replicated_postgres, replicated_store
):
    store_id = replicated_store
    # The bound is far: the replica, however far behind, serves what it may.
    async with serving(replica_settings(replicated_postgres, max_lag=3600)) as (_, channel):
        customers = customer_service_pb2_grpc.CustomerServiceStub(channel)
        orders = order_service_pb2_grpc.OrderServiceStub(channel)
        customer_orders = customer_order_service_pb2_grpc.CustomerOrderServiceStub(channel)
        await until(lambda: _is(health(channel), SERVING))
        before = await create_customer(customers, store_id)
        await create_order(orders, store_id, before.customer_id)
        await caught_up(replicated_postgres)
        async with replay_paused(replicated_postgres):
            after = await create_customer(customers, store_id)
            late_order = await create_order(orders, store_id, before.customer_id)

            # Lists and statistics: the replica's, without what it has not replayed.
            assert await listed_ids(customers, store_id) == {before.customer_id}
            listed = await orders.ListOrders(order_service_pb2.ListOrdersRequest(store_id=store_id))
            assert len(listed.orders) == 1
            count = await customer_orders.GetCustomerOrderCount(
                customer_order_service_pb2.GetCustomerOrderCountRequest(
                    store_id=store_id, customer_id=before.customer_id
                )
            )
            assert count.order_count == 1

            # Gets: the primary's, right after the caller's own write (a change too,
            # which a read of the replica would miss without failing).
            await customers.UpdateCustomer(
                pb.UpdateCustomerRequest(
                    store_id=store_id,
                    customer_id=before.customer_id,
                    customer=customer_pb2.Customer(first_name="Renamed"),
                    update_mask={"paths": ["first_name"]},
                )
            )
            renamed = await customers.GetCustomer(
                pb.GetCustomerRequest(store_id=store_id, customer_id=before.customer_id)
            )
            assert renamed.customer.first_name == "Renamed"
            got = await customers.GetCustomer(
                pb.GetCustomerRequest(store_id=store_id, customer_id=after.customer_id)
            )
            assert got.customer.email == after.email
            await orders.GetOrder(
                order_service_pb2.GetOrderRequest(store_id=store_id, order_id=late_order.order_id)
            )
            # A list of a customer the replica does not have yet: read on the primary
            # rather than NOT_FOUND.
            addresses = await customers.ListCustomerAddresses(
                pb.ListCustomerAddressesRequest(store_id=store_id, customer_id=after.customer_id)
            )
            assert list(addresses.addresses) == []

            # A caller that asks for it reads the primary.
            assert await listed_ids(customers, store_id, metadata=STRONG) == {
                before.customer_id,
                after.customer_id,
            }
            assert await health(channel) == SERVING
        await caught_up(replicated_postgres)
        assert await listed_ids(customers, store_id) == {before.customer_id, after.customer_id}


async def test_a_replica_behind_the_bound_is_bypassed_until_it_catches_up(
    replicated_postgres, replicated_store
):
    store_id = replicated_store
    async with serving(replica_settings(replicated_postgres, max_lag=0.5)) as (_, channel):
        customers = customer_service_pb2_grpc.CustomerServiceStub(channel)
        await until(lambda: _is(health(channel), SERVING))
        async with replay_paused(replicated_postgres):
            late = await create_customer(customers, store_id)
            await until(lambda: _is(health(channel), NOT_SERVING))
            assert await health(channel, "") == SERVING  # the server serves, on the primary
            assert REGISTRY.get_sample_value("commerce_read_replica_serving") == 0
            on_primary = reads("primary")
            assert late.customer_id in await listed_ids(customers, store_id)
            assert reads("primary") == on_primary + 1
        await until(lambda: _is(health(channel), SERVING))
        on_replica = reads("replica")
        assert late.customer_id in await listed_ids(customers, store_id)
        assert reads("replica") == on_replica + 1


async def _read_until(
    stop: asyncio.Event,
    customers: customer_service_pb2_grpc.CustomerServiceStub,
    customer_orders: customer_order_service_pb2_grpc.CustomerOrderServiceStub,
    store_id: int,
    customer_id: int,
    failures: list[grpc.StatusCode],
) -> None:
    while not stop.is_set():
        try:
            await customers.ListCustomers(pb.ListCustomersRequest(store_id=store_id), timeout=20)
            await customer_orders.GetCustomerOrderCount(
                customer_order_service_pb2.GetCustomerOrderCountRequest(
                    store_id=store_id, customer_id=customer_id
                ),
                timeout=20,
            )
        except grpc.aio.AioRpcError as error:
            failures.append(error.code())


async def test_a_replica_stopped_under_load_fails_no_call(replicated_postgres, replicated_store):
    store_id = replicated_store
    settings = replica_settings(replicated_postgres, max_lag=3600)
    async with serving(settings) as (_, channel):
        customers = customer_service_pb2_grpc.CustomerServiceStub(channel)
        customer_orders = customer_order_service_pb2_grpc.CustomerOrderServiceStub(channel)
        customer = await create_customer(customers, store_id)
        await caught_up(replicated_postgres)
        await until(lambda: _is(health(channel), SERVING))
        stop = asyncio.Event()
        failures: list[grpc.StatusCode] = []
        readers = [
            asyncio.create_task(
                _read_until(
                    stop, customers, customer_orders, store_id, customer.customer_id, failures
                )
            )
            for _ in range(4)
        ]
        try:
            on_replica = reads("replica")
            await until(_more_than(lambda: reads("replica"), on_replica + 20))
            await asyncio.to_thread(replicated_postgres.stop_standby)
            try:
                await until(lambda: _is(health(channel), NOT_SERVING))
                on_primary = reads("primary")
                await until(_more_than(lambda: reads("primary"), on_primary + 20))
            finally:
                await asyncio.to_thread(replicated_postgres.start_standby)
        finally:
            stop.set()
            await asyncio.gather(*readers)
        assert failures == []
        await until(lambda: _is(health(channel), SERVING))
        on_replica = reads("replica")
        await customers.ListCustomers(pb.ListCustomersRequest(store_id=store_id))
        assert reads("replica") == on_replica + 1


def _more_than(value, threshold: float):  # type: ignore[no-untyped-def]
    async def reached() -> bool:
        return bool(value() >= threshold)

    return reached
