"""How order numbers are handed out, through a real server. On PostgreSQL a create
takes its number before its transaction, in a statement that commits at once, so the
store's counter row is not locked while an order's transaction runs: a create held
up in its transaction does not hold up the store's next one, and a create that fails
after taking its number leaves a gap. On SQLite (one writer at a time) the number is
taken in the order's transaction: no gap. Either way, a retry of a create that
landed takes no number."""

from __future__ import annotations

import asyncio
import time
import uuid

import grpc
import pytest
from commerce.customers.v1 import customer_pb2
from commerce.orders.v1 import order_pb2
from commerce.orders.v1 import order_service_pb2 as pb
from sqlalchemy import text

from tests.e2e.helpers import create_customer, create_order, line
from tests.e2e.helpers import pb as customers_pb
from tests.errors import rpc_error

Code = grpc.StatusCode


def guest_order(store_id: int, **fields: object) -> pb.CreateOrderRequest:
    return pb.CreateOrderRequest(
        store_id=store_id, currency_code="EUR", line_items=[line()], **fields
    )


async def inactive_customer(customers, store_id: int) -> int:
    customer = await create_customer(customers, store_id)
    await customers.SetCustomerStatus(
        customers_pb.SetCustomerStatusRequest(
            store_id=store_id,
            customer_id=customer.customer_id,
            status=customer_pb2.CUSTOMER_STATUS_INACTIVE,
        )
    )
    return customer.customer_id


async def order_counter(sessions, store_id: int) -> int:
    async with sessions() as session:
        value = await session.scalar(
            text("SELECT value FROM store_counters WHERE store_id = :s AND name = 'order'"),
            {"s": store_id},
        )
    return int(value or 0)


async def test_a_retry_of_a_create_that_landed_takes_no_number(orders, store_id):
    request = guest_order(store_id, request_id=str(uuid.uuid4()))
    first = (await orders.CreateOrder(request)).order
    retried = (await orders.CreateOrder(request)).order
    assert retried == first
    assert first.order_number == "O-000001"
    # The retry took no number: the next order is the second, without a gap.
    assert (await create_order(orders, store_id)).order_number == "O-000002"


async def test_a_create_that_fails_after_taking_its_number_leaves_a_gap_on_postgresql(
    backend, orders, customers, store_id
):
    """The customer is checked in the order's transaction, after the number was taken
    (on PostgreSQL): the number is not given back. SQLite takes it in the
    transaction, which rolls back with it."""
    failure = await rpc_error(
        create_order(orders, store_id, await inactive_customer(customers, store_id)),
        Code.FAILED_PRECONDITION,
    )
    assert failure.error_info.reason == "CUSTOMER_INACTIVE"
    placed = await create_order(orders, store_id)
    assert placed.order_number == ("O-000002" if backend == "postgresql" else "O-000001")


async def test_concurrent_creates_take_one_number_each_failed_or_not(
    backend, orders, customers, sessions, store_id
):
    """40 orders and 10 refused creates at once in one store: the orders' numbers are
    distinct; on PostgreSQL each create took one number (the refused ones' are the
    gaps), on SQLite only the orders did."""
    refused = await inactive_customer(customers, store_id)
    calls = [
        rpc_error(create_order(orders, store_id, refused), Code.FAILED_PRECONDITION)
        if call % 5 == 0
        else create_order(orders, store_id)
        for call in range(50)
    ]
    results = await asyncio.gather(*calls)
    placed = [result for result in results if isinstance(result, order_pb2.Order)]
    numbers = sorted(order.order_id for order in placed)
    assert len(set(numbers)) == len(numbers) == 40
    taken = len(calls) if backend == "postgresql" else len(placed)
    assert await order_counter(sessions, store_id) == taken
    assert set(numbers) <= set(range(1, taken + 1))
    if backend == "sqlite":
        assert numbers == list(range(1, len(placed) + 1))


async def wait_for_insert_waiting_on_a_lock(sessions) -> None:
    """Until the server's INSERT of an order waits for a row lock (PostgreSQL)."""
    query = text(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND wait_event_type = 'Lock' AND query LIKE 'INSERT INTO orders %'"
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        async with sessions() as session:
            if (await session.execute(query)).scalar_one():
                return
        await asyncio.sleep(0.01)
    raise AssertionError("the create never waited for the order row's lock")


_ORDER_ONE = text(
    "INSERT INTO orders (store_id, order_id, order_number, customer_id, status,"
    " currency_code, total_minor, contact_email, created_at, updated_at)"
    " VALUES (:s, 1, 'O-000001', NULL, 'pending', 'EUR', 0, '', now(), now())"
)


async def test_a_create_held_up_in_its_transaction_does_not_hold_up_the_next(
    backend, orders, sessions, store_id
):
    """The first create takes number 1 and then waits inside its transaction (for the
    lock of an uncommitted order 1 of the test's own); meanwhile the store's next
    create takes number 2 and commits. With the number taken in the transaction, the
    second create would queue behind the first on the counter row until its deadline.
    Numbers follow the order they are taken in, not the order creates commit in."""
    if backend != "postgresql":
        pytest.skip("SQLite has one writer at a time: the second create would wait anyway")
    async with sessions() as blocker:
        await blocker.execute(_ORDER_ONE, {"s": store_id})
        first = asyncio.ensure_future(orders.CreateOrder(guest_order(store_id), timeout=60))
        await wait_for_insert_waiting_on_a_lock(sessions)
        second = (await orders.CreateOrder(guest_order(store_id), timeout=20)).order
        assert second.order_number == "O-000002"
        assert not first.done()
        await blocker.rollback()
    assert (await first).order.order_number == "O-000001"
