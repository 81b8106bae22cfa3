"""The orders service layer and its customer metrics provider on a real database,
without gRPC."""

from __future__ import annotations

import pytest

from services.core.domain.customer_metrics import CustomerMetric, CustomerMetricsRegistry, Money
from services.core.domain.errors import FailedPrecondition, InvalidArgument, NotFound
from services.core.domain.pagination import PageTokenCodec
from services.core.domain.passwords import PasswordHasher
from services.customers.service import CustomerService, NewCustomer
from services.orders.customer_orders import CustomerOrderService, OrderMetricsProvider
from services.orders.models import OrderStatus
from services.orders.rules import NewLineItem, NewOrder, OrderFilter
from services.orders.service import OrderService


@pytest.fixture
async def customer_service(database):
    passwords = PasswordHasher(rounds=4, max_workers=1)
    yield CustomerService(database, passwords, PageTokenCodec("secret"))
    passwords.close()


@pytest.fixture
def order_service(database) -> OrderService:
    return OrderService(database, PageTokenCodec("secret"))


def new_order(customer_id: int = 0, *prices: int, currency: str = "EUR") -> NewOrder:
    return NewOrder(
        line_items=[NewLineItem(f"SKU-{i}", "Thing", 1, price) for i, price in enumerate(prices)],
        currency_code=currency,
        customer_id=customer_id,
    )


async def test_orders_without_grpc(customer_service, order_service, store_id):
    customer = await customer_service.create_customer(store_id, NewCustomer("ann@example.com"))
    order = await order_service.create_order(store_id, new_order(customer.customer_id, 250, 750))
    assert (order.order_number, order.total_minor, order.status) == ("O-000001", 1000, "pending")
    assert order.customer is not None
    assert order.customer.email == "ann@example.com"

    paid = await order_service.update_status(store_id, order.order_id, OrderStatus.PAID)
    assert paid.status == OrderStatus.PAID
    with pytest.raises(FailedPrecondition) as raised:
        await order_service.update_status(store_id, order.order_id, OrderStatus.DELIVERED)
    assert raised.value.metadata == {"current_status": "PAID", "requested_status": "DELIVERED"}

    page = await order_service.list_orders(
        store_id, filters=OrderFilter(status=OrderStatus.PAID, customer_id=customer.customer_id)
    )
    assert [listed.order_id for listed in page.orders] == [order.order_id]
    with pytest.raises(NotFound):
        await order_service.get_order(store_id, 99)
    with pytest.raises(InvalidArgument):
        await order_service.create_order(store_id, new_order(0))  # no lines


async def test_the_orders_metrics_provider_through_the_registry(
    database, customer_service, order_service, store_id
):
    customer = await customer_service.create_customer(store_id, NewCustomer("bo@example.com"))
    cid = customer.customer_id
    first = await order_service.create_order(store_id, new_order(cid, 100))
    await order_service.create_order(store_id, new_order(cid, 301))
    last = await order_service.create_order(store_id, new_order(cid, 5000, currency="JPY"))
    cancelled = await order_service.create_order(store_id, new_order(cid, 99_999))
    await order_service.update_status(store_id, cancelled.order_id, OrderStatus.CANCELLED)

    registry = CustomerMetricsRegistry()
    provider = OrderMetricsProvider(database)
    registry.register(provider)
    with pytest.raises(ValueError, match="orders"):
        registry.register(OrderMetricsProvider(database))

    metrics = await registry.collect(store_id, cid)
    assert metrics == {
        "orders": [
            CustomerMetric("total_orders", "Total orders", 3),
            CustomerMetric("total_spent", "Total spent", Money("EUR", 401)),
            CustomerMetric("avg_order_value", "Average order value", Money("EUR", 201)),
            CustomerMetric("total_spent", "Total spent", Money("JPY", 5000)),
            CustomerMetric("avg_order_value", "Average order value", Money("JPY", 5000)),
            CustomerMetric("first_order_time", "First order", first.created_at),
            CustomerMetric("last_order_time", "Last order", last.created_at),
        ]
    }
    with pytest.raises(NotFound):
        await registry.collect(store_id, cid + 1)


async def test_recent_orders_and_count(customer_service, order_service, database, store_id):
    customer = await customer_service.create_customer(store_id, NewCustomer("cy@example.com"))
    history = CustomerOrderService(
        database, PageTokenCodec("secret"), OrderMetricsProvider(database)
    )
    placed = [
        await order_service.create_order(store_id, new_order(customer.customer_id, 10))
        for _ in range(7)
    ]
    recent = await history.recent_orders(store_id, customer.customer_id)
    assert [order.order_id for order in recent] == [o.order_id for o in placed[::-1][:5]]
    assert await history.order_count(store_id, customer.customer_id) == 7
    assert await history.order_count(store_id, customer.customer_id, OrderStatus.PAID) == 0
