"""The kept order statistics (customer_order_stats) equal the aggregate of the orders
from scratch after any sequence of creates and status changes, concurrent ones
included, on each database, through the service layer."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from services.core.domain.errors import FailedPrecondition
from services.core.domain.pagination import PageTokenCodec
from services.core.domain.passwords import PasswordHasher
from services.customers.service import CustomerService, NewCustomer
from services.orders import queries
from services.orders.customer_orders import OrderMetricsProvider
from services.orders.models import (
    STATISTICS_SLOTS,
    CustomerOrderStatistics,
    OrderStatus,
    statistics_slot,
)
from services.orders.rules import CustomerOrderStats, NewLineItem, NewOrder, StatusChange
from services.orders.service import OrderService
from tests.conftest import new_store

T = TypeVar("T")

CUSTOMERS = 3
CURRENCIES = ("EUR", "USD", "JPY")


@dataclass(frozen=True)
class Create:
    customer: int | None  # an index into the example's customers; None: a guest
    currency: str
    price: int


@dataclass(frozen=True)
class Move:
    order: int  # an index into the orders made so far (modulo their number)
    status: OrderStatus
    # Through the deprecated UpdateOrderStatus rather than Pay/Ship/Deliver/CancelOrder.
    deprecated: bool


OPERATIONS = st.one_of(
    st.builds(
        Create,
        st.one_of(st.none(), st.integers(0, CUSTOMERS - 1)),
        st.sampled_from(CURRENCIES),
        st.integers(0, 5_000),
    ),
    st.builds(
        Move,
        st.integers(0, 1_000),
        st.sampled_from([OrderStatus.PAID, OrderStatus.SHIPPED, OrderStatus.DELIVERED])
        | st.just(OrderStatus.CANCELLED),
        st.booleans(),
    ),
)
# Each step's operations run at once (asyncio.gather): concurrent creates and
# changes of one customer's orders, and of one order.
PROGRAMS = st.lists(st.lists(OPERATIONS, min_size=1, max_size=4), min_size=1, max_size=12)


@pytest.fixture
async def customer_service(database):
    passwords = PasswordHasher(rounds=4, max_workers=1)
    yield CustomerService(database, passwords, PageTokenCodec("secret"))
    passwords.close()


async def kept_and_aggregated(
    database, store_id: int, customer_id: int
) -> tuple[CustomerOrderStats, CustomerOrderStats]:
    kept = await OrderMetricsProvider(database).customer_order_stats(store_id, customer_id)
    async with database.reading(store_id) as uow:
        aggregated = await queries.aggregated_order_stats(uow, customer_id)
    return kept, aggregated


async def test_kept_statistics_equal_the_aggregate_after_any_changes(
    database, sessions, customer_service
):
    loop = asyncio.get_running_loop()
    order_service = OrderService(database, PageTokenCodec("secret"))

    def run(coroutine: Awaitable[T]) -> T:
        """From hypothesis' thread, on the test's event loop (the engine's)."""
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result(timeout=120)  # type: ignore[arg-type]

    async def apply(store_id: int, customers: list[int], orders: list[int], operation: Any) -> None:
        if isinstance(operation, Create):
            customer_id = 0 if operation.customer is None else customers[operation.customer]
            line = NewLineItem("SKU", "Thing", 1, operation.price)
            order = await order_service.create_order(
                store_id, NewOrder([line], operation.currency, customer_id)
            )
            orders.append(order.order_id)
            return
        if not orders:
            return
        order_id = orders[operation.order % len(orders)]
        try:
            if operation.deprecated:
                await order_service.update_status(store_id, order_id, operation.status)
            else:
                reason = "changed their mind" if operation.status is OrderStatus.CANCELLED else ""
                tracking = "TRACK-1" if operation.status is OrderStatus.SHIPPED else ""
                change = StatusChange(
                    order_id, operation.status, tracking_reference=tracking, cancel_reason=reason
                )
                await order_service.change_status(store_id, change)
        except FailedPrecondition:  # not from the order's status (now): nothing changes
            pass

    async def check(store_id: int, customers: list[int]) -> None:
        for customer_id in customers:
            kept, aggregated = await kept_and_aggregated(database, store_id, customer_id)
            assert kept == aggregated

    async def example(program: list[list[Any]]) -> None:
        store_id = await new_store(sessions)
        customers = [
            (
                await customer_service.create_customer(
                    store_id, NewCustomer(f"c{index}@example.com")
                )
            ).customer_id
            for index in range(CUSTOMERS)
        ]
        orders: list[int] = []
        for step in program:
            await asyncio.gather(
                *(apply(store_id, customers, orders, operation) for operation in step)
            )
            await check(store_id, customers)

    @settings(suppress_health_check=[HealthCheck.too_slow])
    @given(PROGRAMS)
    def kept_equals_aggregated(program: list[list[Any]]) -> None:
        run(example(program))

    await asyncio.to_thread(kept_equals_aggregated)


def new_order(customer_id: int, price: int, currency: str = "EUR") -> NewOrder:
    return NewOrder([NewLineItem("SKU", "Thing", 1, price)], currency, customer_id)


async def test_cancelling_the_earliest_and_latest_finds_the_next(
    database, customer_service, store_id
):
    """The times move to the next counted order in the currency (not one in another
    currency, nor a cancelled one); the last counted order's cancel empties the
    currency."""
    orders = OrderService(database, PageTokenCodec("secret"))
    cid = (
        await customer_service.create_customer(store_id, NewCustomer("a@example.com"))
    ).customer_id
    placed = []
    for price, currency in ((100, "EUR"), (200, "USD"), (300, "EUR"), (400, "EUR"), (500, "USD")):
        placed.append(await orders.create_order(store_id, new_order(cid, price, currency)))
        # Guests between them, so that all of the customer's orders share a slot
        # (one row per currency, whose earliest and latest must be found again).
        for _ in range(STATISTICS_SLOTS - 1):
            await orders.create_order(store_id, new_order(0, 1))
    assert len({statistics_slot(order.order_id) for order in placed}) == 1
    cancel = OrderStatus.CANCELLED
    await orders.update_status(store_id, placed[2].order_id, cancel)  # a middle one
    await orders.update_status(store_id, placed[0].order_id, cancel)  # the earliest EUR
    kept, aggregated = await kept_and_aggregated(database, store_id, cid)
    assert kept == aggregated
    assert [(t.currency_code, t.order_count, t.total_spent_minor) for t in kept.currencies] == [
        ("EUR", 1, 400),
        ("USD", 2, 700),
    ]
    assert kept.first_order_time == placed[1].created_at
    await orders.update_status(store_id, placed[4].order_id, cancel)  # the latest
    kept, aggregated = await kept_and_aggregated(database, store_id, cid)
    assert kept == aggregated
    assert kept.last_order_time == placed[3].created_at
    await orders.update_status(store_id, placed[3].order_id, cancel)  # EUR's last
    kept, aggregated = await kept_and_aggregated(database, store_id, cid)
    assert kept == aggregated
    assert [t.currency_code for t in kept.currencies] == ["USD"]
    assert (kept.first_order_time, kept.last_order_time) == (placed[1].created_at,) * 2


async def test_guest_orders_have_no_statistics(database, sessions, store_id):
    orders = OrderService(database, PageTokenCodec("secret"))
    guest = await orders.create_order(store_id, new_order(0, 100))
    await orders.update_status(store_id, guest.order_id, OrderStatus.CANCELLED)
    async with sessions() as session:
        rows = await session.execute(
            select(CustomerOrderStatistics).where(CustomerOrderStatistics.store_id == store_id)
        )
        assert rows.all() == []


async def test_concurrent_orders_and_cancels_of_one_customer_lose_no_update(
    backend, database, customer_service, store_id
):
    """Many creates and cancels of one customer at once, each in its own transaction
    on its own connection (PostgreSQL; SQLite has one writer at a time): the kept
    statistics are the aggregate, so no change overwrote another's."""
    if backend != "postgresql":
        pytest.skip("SQLite runs one writer at a time")
    orders = OrderService(database, PageTokenCodec("secret"))
    cid = (
        await customer_service.create_customer(store_id, NewCustomer("b@example.com"))
    ).customer_id
    earlier = [await orders.create_order(store_id, new_order(cid, 10 + n)) for n in range(20)]

    def cancel(order_id: int) -> Callable[[], Awaitable[Any]]:
        return lambda: orders.update_status(store_id, order_id, OrderStatus.CANCELLED)

    def create(n: int) -> Callable[[], Awaitable[Any]]:
        return lambda: orders.create_order(
            store_id, new_order(cid, 1000 + n, ("EUR", "USD")[n % 2])
        )

    calls = [cancel(order.order_id) for order in earlier] + [create(n) for n in range(40)]
    # Interleaved, so cancels of the earliest and latest meet creates in flight.
    calls = calls[::2] + calls[1::2]
    await asyncio.gather(*(call() for call in calls))
    kept, aggregated = await kept_and_aggregated(database, store_id, cid)
    assert kept == aggregated
    assert kept.total_orders == 40
