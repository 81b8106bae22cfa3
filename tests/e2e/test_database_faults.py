"""The server against a private PostgreSQL cluster that the test stops and starts:
health follows the database, calls fail fast while it is away and work again when
it is back, without a restart. And a deadline cancels the statement it bounds.

The cluster is created for this module (pg_createcluster) on its own port, never
the shared one at 5432."""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import asyncpg
import grpc
import pytest
from commerce.customers.v1 import customer_pb2, customer_service_pb2_grpc
from commerce.orders.v1 import order_pb2, order_service_pb2, order_service_pb2_grpc
from google.protobuf import field_mask_pb2
from grpc_health.v1 import health_pb2

from tests.e2e.helpers import pb
from tests.errors import parse
from tests.instances import Cluster, clusters_available
from tests.process import (
    clean_environment,
    commerce,
    health_status,
    running_server,
    wait_for,
)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
CUSTOMERS = "commerce.customers.v1.CustomerService"

pytestmark = pytest.mark.skipif(not clusters_available(), reason="needs Debian's postgresql-common")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    cluster = Cluster()
    cluster.create()
    try:
        env = clean_environment(DATABASE_URL=cluster.url)
        commerce("migrate", env=env)
        commerce("stores", "create", "--name", "Faults", env=env)
        yield cluster
    finally:
        cluster.drop()


def get_customer_code(target: str) -> grpc.StatusCode:
    with grpc.insecure_channel(target) as channel:
        try:
            customer_service_pb2_grpc.CustomerServiceStub(channel).GetCustomer(
                pb.GetCustomerRequest(store_id=1, customer_id=424242), timeout=10
            )
        except grpc.RpcError as error:
            return error.code()
    return grpc.StatusCode.OK


def test_health_and_calls_follow_the_database(tmp_path, cluster):
    env = clean_environment(DATABASE_URL=cluster.url)
    flags = (
        "--health-check-interval",
        "0.3",
        "--db-connect-timeout",
        "2",
        "--store-cache-seconds",
        "0",
    )
    with running_server(tmp_path, env, *flags) as server:
        assert health_status(server.port) == SERVING
        assert health_status(server.port, CUSTOMERS) == SERVING
        assert get_customer_code(server.target) == grpc.StatusCode.NOT_FOUND

        cluster.stop()
        try:
            wait_for(lambda: health_status(server.port, CUSTOMERS) == NOT_SERVING, timeout=20)
            assert health_status(server.port) == NOT_SERVING
            channel = grpc.insecure_channel(server.target)
            stub = customer_service_pb2_grpc.CustomerServiceStub(channel)
            with pytest.raises(grpc.RpcError) as lost:
                stub.GetCustomer(pb.GetCustomerRequest(store_id=1, customer_id=1), timeout=10)
            channel.close()
            failure = parse(lost.value)
            assert failure.code == grpc.StatusCode.UNAVAILABLE
            assert failure.error_info.reason == "DATABASE_UNAVAILABLE"
            assert failure.retry_info.retry_delay.seconds == 1
        finally:
            cluster.start()

        wait_for(lambda: health_status(server.port, CUSTOMERS) == SERVING, timeout=30)
        # The pool drops its dead connections; calls work again in the same process.
        wait_for(lambda: get_customer_code(server.target) == grpc.StatusCode.NOT_FOUND, timeout=20)
        assert server.process.poll() is None
    assert "database unreachable" in server.output()
    assert "database reachable again" in server.output()


async def _waiting_on_locks(url: str) -> int:
    connection = await asyncpg.connect(url)
    try:
        return await connection.fetchval(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
        )
    finally:
        await connection.close()


def test_a_deadline_cancels_the_statement_it_bounds(tmp_path, cluster):
    """A row lock held by the test makes UpdateCustomer wait; the caller's deadline
    passes; the server must cancel its statement (not leave it waiting) and roll
    back, so that releasing the lock later changes nothing."""
    env = clean_environment(DATABASE_URL=cluster.url)
    with running_server(tmp_path, env) as server:
        channel = grpc.insecure_channel(server.target)
        customers = customer_service_pb2_grpc.CustomerServiceStub(channel)
        created = customers.CreateCustomer(
            pb.CreateCustomerRequest(
                store_id=1, email=f"slow.{secrets.token_hex(3)}@example.com", first_name="Before"
            )
        ).customer

        async def scenario() -> None:
            holder = await asyncpg.connect(cluster.url)
            transaction = holder.transaction()
            await transaction.start()
            await holder.execute(
                "SELECT 1 FROM customers WHERE store_id = 1 AND customer_id = $1 FOR UPDATE",
                created.customer_id,
            )
            try:
                update = pb.UpdateCustomerRequest(
                    store_id=1,
                    customer_id=created.customer_id,
                    customer=customer_pb2.Customer(first_name="After"),
                    update_mask=field_mask_pb2.FieldMask(paths=["first_name"]),
                )
                with pytest.raises(grpc.RpcError) as raised:
                    await asyncio.to_thread(customers.UpdateCustomer, update, timeout=2)
                assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
                # Nothing of the server's is still waiting on the lock.
                for _ in range(300):  # up to 30 s for the cancellation to land
                    if await _waiting_on_locks(cluster.url) == 0:
                        break
                    await asyncio.sleep(0.1)
                assert await _waiting_on_locks(cluster.url) == 0
            finally:
                await transaction.rollback()
                await holder.close()

        asyncio.run(scenario())
        got = customers.GetCustomer(
            pb.GetCustomerRequest(store_id=1, customer_id=created.customer_id), timeout=10
        )
        assert got.customer.first_name == "Before"
        channel.close()


RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}


@dataclass
class Ledger:
    """What a stream of creating clients saw."""

    calls: int = 0
    failures: int = 0
    acknowledged: dict[str, int] = field(default_factory=dict)  # marker -> created id
    lock: threading.Lock = field(default_factory=threading.Lock)


def create_until_stopped(target: str, stop: threading.Event, ledger: Ledger, worker: int) -> None:
    """Creates customers and guest orders, each retried with its own request_id on
    UNAVAILABLE or DEADLINE_EXCEEDED (as a careful client does) until acknowledged."""
    with grpc.insecure_channel(target) as channel:
        customers = customer_service_pb2_grpc.CustomerServiceStub(channel)
        orders = order_service_pb2_grpc.OrderServiceStub(channel)

        def create_customer(marker: str, request_id: str) -> int:
            request = pb.CreateCustomerRequest(store_id=1, email=marker, request_id=request_id)
            return customers.CreateCustomer(request, timeout=3).customer.customer_id

        def create_order(marker: str, request_id: str) -> int:
            request = order_service_pb2.CreateOrderRequest(
                store_id=1,
                currency_code="EUR",
                contact_email=marker,
                request_id=request_id,
                line_items=[order_pb2.OrderLineItem(sku="F", name="F", quantity=1)],
            )
            return orders.CreateOrder(request, timeout=3).order.order_id

        number = 0
        while not stop.is_set():
            number += 1
            marker = f"w{worker}n{number}.{secrets.token_hex(3)}@example.com"
            create = create_customer if number % 2 else create_order
            created = retried(create, marker, str(uuid.uuid4()), ledger)
            with ledger.lock:
                ledger.acknowledged[marker] = created


def retried(create: Callable[[str, str], int], marker: str, request_id: str, ledger: Ledger) -> int:
    for attempt in range(120):
        with ledger.lock:
            ledger.calls += 1
        try:
            return create(marker, request_id)
        except grpc.RpcError as error:
            code = error.code()  # type: ignore[attr-defined]
        assert code in RETRYABLE, code
        with ledger.lock:
            ledger.failures += 1
        time.sleep(min(0.05 * 2**attempt, 0.5))
    raise AssertionError(f"{marker} never got through")


async def _rows_by_marker(url: str) -> dict[str, list[int]]:
    connection = await asyncpg.connect(url)
    try:
        rows = await connection.fetch(
            "SELECT email AS marker, customer_id AS id FROM customers WHERE store_id = 1"
            " UNION ALL"
            " SELECT contact_email, order_id FROM orders WHERE store_id = 1"
        )
    finally:
        await connection.close()
    found: dict[str, list[int]] = {}
    for row in rows:
        found.setdefault(row["marker"], []).append(row["id"])
    return found


def test_no_acknowledged_create_is_lost_or_doubled(tmp_path, cluster):
    """Clients create customers and orders while the database goes away and comes
    back. Every create that was acknowledged is in the database exactly once; retries
    with their request_id never doubled one."""
    env = clean_environment(DATABASE_URL=cluster.url)
    flags = ("--db-connect-timeout", "1", "--health-check-interval", "0.3")
    ledger = Ledger()
    stop = threading.Event()
    with running_server(tmp_path, env, *flags) as server, ThreadPoolExecutor(4) as pool:
        clients = [
            pool.submit(create_until_stopped, server.target, stop, ledger, worker)
            for worker in range(4)
        ]
        time.sleep(1.5)
        cluster.stop()
        time.sleep(2)
        cluster.start()
        wait_for(lambda: health_status(server.port, CUSTOMERS) == SERVING, timeout=30)
        time.sleep(1.5)
        stop.set()
        for client in clients:
            client.result(timeout=120)  # re-raises a client's failed assertion
    stored = asyncio.run(_rows_by_marker(cluster.url))
    for marker, created in ledger.acknowledged.items():
        assert stored.get(marker) == [created], marker
    assert all(len(ids) == 1 for ids in stored.values())  # nothing twice, acknowledged or not
    print(  # the figures docs/operations.md quotes (pytest -s shows them)
        f"creates acknowledged: {len(ledger.acknowledged)}, calls: {ledger.calls}, "
        f"failed and retried: {ledger.failures}, rows lost: 0, rows doubled: 0"
    )
    assert ledger.failures > 0  # the outage was real: some calls failed and were retried
    assert len(ledger.acknowledged) > 20
