"""The orders' amounts as the shared commerce.type.v1.Money, beside the deprecated
*_minor fields: an order's total and lines, a line's `unit_price` as input, and a
customer's statistics per currency."""

from __future__ import annotations

import uuid

import grpc
import pytest
from commerce.orders.v1 import customer_order_service_pb2 as customer_orders_pb
from commerce.orders.v1 import order_pb2
from commerce.orders.v1 import order_service_pb2 as pb
from commerce.type.v1 import money_pb2

from tests.e2e.helpers import create_customer, create_order, line
from tests.errors import rpc_error

Code = grpc.StatusCode


def priced(sku: str, quantity: int, amount: int, currency: str = "") -> order_pb2.OrderLineItem:
    """A line priced with `unit_price` alone."""
    return order_pb2.OrderLineItem(
        sku=sku,
        name=f"Product {sku}",
        quantity=quantity,
        unit_price=money_pb2.Money(currency_code=currency, amount_minor=amount),
    )


def money(currency: str, amount: int) -> money_pb2.Money:
    return money_pb2.Money(currency_code=currency, amount_minor=amount)


async def test_an_order_shows_every_amount_as_money_and_as_minor_units(orders, store_id):
    order = await create_order(
        orders,
        store_id,
        currency_code="jpy",
        line_items=[priced("A", 3, 500, "jpy"), priced("B", 2, 0), line("C", 1, 999)],
    )
    assert order.total == money("JPY", 3 * 500 + 999)
    assert order.total_minor == 3 * 500 + 999
    assert [(item.unit_price, item.line_total) for item in order.line_items] == [
        (money("JPY", 500), money("JPY", 1500)),
        (money("JPY", 0), money("JPY", 0)),
        (money("JPY", 999), money("JPY", 999)),
    ]
    assert [(item.unit_price_minor, item.line_total_minor) for item in order.line_items] == [
        (500, 1500),
        (0, 0),
        (999, 999),
    ]
    assert order.name == f"stores/{store_id}/orders/{order.order_id}"
    assert order.etag
    got = await orders.GetOrder(pb.GetOrderRequest(store_id=store_id, order_id=order.order_id))
    assert got.order == order
    listed = await orders.ListOrders(pb.ListOrdersRequest(store_id=store_id))
    assert list(listed.orders) == [order]


async def test_unit_price_wins_over_unit_price_minor(orders, store_id):
    both = order_pb2.OrderLineItem(
        sku="A",
        name="A",
        quantity=2,
        unit_price_minor=100,
        unit_price=money("EUR", 700),
    )
    order = await create_order(orders, store_id, line_items=[both])
    assert order.line_items[0].unit_price_minor == 700
    assert order.total == money("EUR", 1400)
    # Set to zero, the message still wins: a free line.
    free = order_pb2.OrderLineItem(
        sku="A", name="A", quantity=1, unit_price_minor=100, unit_price=money_pb2.Money()
    )
    order = await create_order(orders, store_id, line_items=[free])
    assert order.total == money("EUR", 0)


@pytest.mark.parametrize(
    ("line_items", "fields"),
    [
        ([priced("A", 1, 100, "USD")], {"line_items[0].unit_price.currency_code"}),
        (
            [line("A"), priced("B", 1, 100, "eur"), priced("C", 1, 100, "XXX")],
            {"line_items[2].unit_price.currency_code"},
        ),
        ([priced("A", 1, -1)], {"line_items[0].unit_price.amount_minor"}),
        ([line("A", unit_price_minor=-1)], {"line_items[0].unit_price_minor"}),
        (
            [priced("A", 1, 10**12 + 1, "GBP")],
            {"line_items[0].unit_price.amount_minor", "line_items[0].unit_price.currency_code"},
        ),
    ],
)
async def test_a_unit_price_in_another_currency_or_negative_is_invalid(
    orders, store_id, line_items, fields
):
    failure = await rpc_error(
        orders.CreateOrder(
            pb.CreateOrderRequest(store_id=store_id, currency_code="EUR", line_items=line_items)
        ),
        Code.INVALID_ARGUMENT,
    )
    assert failure.violated_fields == fields
    listed = await orders.ListOrders(pb.ListOrdersRequest(store_id=store_id))
    assert list(listed.orders) == []


async def test_a_retry_may_move_the_price_to_unit_price(orders, store_id):
    request_id = str(uuid.uuid4())

    def request(*line_items: order_pb2.OrderLineItem) -> pb.CreateOrderRequest:
        return pb.CreateOrderRequest(
            store_id=store_id, currency_code="EUR", line_items=line_items, request_id=request_id
        )

    first = (await orders.CreateOrder(request(line("A", 2, 1250)))).order
    for retry in (priced("A", 2, 1250), priced("A", 2, 1250, "eur")):
        assert (await orders.CreateOrder(request(retry))).order == first
    failure = await rpc_error(
        orders.CreateOrder(request(priced("A", 2, 1251))), Code.INVALID_ARGUMENT
    )
    assert failure.violated_fields == {"request_id"}


async def test_statistics_per_currency_as_money(orders, customers, customer_orders, store_id):
    ann = await create_customer(customers, store_id)
    await create_order(orders, store_id, ann.customer_id, line_items=[line("A", 1, 1000)])
    await create_order(orders, store_id, ann.customer_id, line_items=[line("A", 1, 1001)])
    await create_order(
        orders, store_id, ann.customer_id, currency_code="JPY", line_items=[line("A", 3, 500)]
    )
    stats = (
        await customer_orders.GetCustomerOrderStats(
            customer_orders_pb.GetCustomerOrderStatsRequest(
                store_id=store_id, customer_id=ann.customer_id
            )
        )
    ).stats
    assert list(stats.total_spent_per_currency) == [money("EUR", 2001), money("JPY", 1500)]
    # 2001 / 2 = 1000.5, rounded half away from zero.
    assert list(stats.avg_order_value_per_currency) == [money("EUR", 1001), money("JPY", 1500)]
    deprecated = [(m.currency_code, m.amount_minor) for m in stats.total_spent]
    assert deprecated == [("EUR", 2001), ("JPY", 1500)]
    averages = [(m.currency_code, m.amount_minor) for m in stats.avg_order_value]
    assert averages == [("EUR", 1001), ("JPY", 1500)]
    bob = await create_customer(customers, store_id)
    empty = (
        await customer_orders.GetCustomerOrderStats(
            customer_orders_pb.GetCustomerOrderStatsRequest(
                store_id=store_id, customer_id=bob.customer_id
            )
        )
    ).stats
    assert list(empty.total_spent_per_currency) == []
    assert list(empty.avg_order_value_per_currency) == []


async def test_an_order_still_shows_its_customer(orders, customers, store_id):
    ann = await create_customer(customers, store_id, first_name="Ann")
    order = await create_order(orders, store_id, ann.customer_id)
    paid = (
        await orders.PayOrder(pb.PayOrderRequest(store_id=store_id, order_id=order.order_id))
    ).order
    assert order.customer == ann
    assert paid.customer == ann
