"""CustomerService.GetCustomerMetrics: the customers module serves what other modules
registered about a customer, without knowing those modules."""

from __future__ import annotations

import grpc
from commerce.customers.v1 import customer_service_pb2_grpc

from tests.e2e.helpers import create_customer, create_order, line, pb, serving
from tests.errors import rpc_error


def plain(metrics, source: str = "orders") -> list[tuple]:
    """The metrics of one source, in the order they came."""
    return [
        (m.source, m.name, m.WhichOneof("value"), m.int_value, m.currency_code)
        for m in metrics
        if m.source == source
    ]


async def test_metrics_come_from_the_mounted_orders_module(customers, orders, store_id):
    ann = await create_customer(customers, store_id)
    request = pb.GetCustomerMetricsRequest(store_id=store_id, customer_id=ann.customer_id)

    before = (await customers.GetCustomerMetrics(request)).metrics
    assert plain(before) == [
        ("orders", "total_orders", "int_value", 0, ""),
        ("orders", "first_order_time", None, 0, ""),
        ("orders", "last_order_time", None, 0, ""),
    ]

    first = await create_order(
        orders, store_id, ann.customer_id, line_items=[line(unit_price_minor=300)]
    )
    last = await create_order(
        orders, store_id, ann.customer_id, line_items=[line(unit_price_minor=500)]
    )
    metrics = list((await customers.GetCustomerMetrics(request)).metrics)
    # Every mounted consumer contributes, each in a block of its own.
    assert [m.source for m in metrics] == ["orders"] * 5 + ["loyalty"] * 3
    assert plain(metrics) == [
        ("orders", "total_orders", "int_value", 2, ""),
        ("orders", "total_spent", "int_value", 800, "EUR"),
        ("orders", "avg_order_value", "int_value", 400, "EUR"),
        ("orders", "first_order_time", "time_value", 0, ""),
        ("orders", "last_order_time", "time_value", 0, ""),
    ]
    assert metrics[3].time_value == first.create_time
    assert metrics[4].time_value == last.create_time
    assert metrics[0].label == "Total orders"

    failure = await rpc_error(
        customers.GetCustomerMetrics(
            pb.GetCustomerMetricsRequest(store_id=store_id, customer_id=404)
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    assert failure.resource_info.resource_type == "customer"
    assert failure.resource_info.resource_name == f"stores/{store_id}/customers/404"


async def test_without_orders_mounted_there_are_no_metrics(settings, customers, store_id):
    ann = await create_customer(customers, store_id)
    async with serving(settings, ["customers"]) as (_, channel):
        stub = customer_service_pb2_grpc.CustomerServiceStub(channel)
        response = await stub.GetCustomerMetrics(
            pb.GetCustomerMetricsRequest(store_id=store_id, customer_id=ann.customer_id)
        )
        assert list(response.metrics) == []
        await rpc_error(
            stub.GetCustomerMetrics(
                pb.GetCustomerMetricsRequest(store_id=store_id, customer_id=404)
            ),
            grpc.StatusCode.NOT_FOUND,
        )


async def test_money_values_come_as_money_when_asked_for(customers, orders, store_id):
    ann = await create_customer(customers, store_id)
    await create_order(orders, store_id, ann.customer_id, line_items=[line(unit_price_minor=300)])
    await create_order(
        orders,
        store_id,
        ann.customer_id,
        currency_code="JPY",
        line_items=[line(unit_price_minor=500)],
    )
    asked = pb.GetCustomerMetricsRequest(
        store_id=store_id, customer_id=ann.customer_id, money_values=True
    )
    metrics = [
        m for m in (await customers.GetCustomerMetrics(asked)).metrics if m.source == "orders"
    ]
    money = [
        (m.name, m.WhichOneof("value"), m.money_value.currency_code, m.money_value.amount_minor)
        for m in metrics
        if m.name in ("total_spent", "avg_order_value")
    ]
    assert sorted(money) == [
        ("avg_order_value", "money_value", "EUR", 300),
        ("avg_order_value", "money_value", "JPY", 500),
        ("total_spent", "money_value", "EUR", 300),
        ("total_spent", "money_value", "JPY", 500),
    ]
    assert all(m.currency_code == "" for m in metrics)
    # A count stays a count.
    assert plain(metrics)[0] == ("orders", "total_orders", "int_value", 2, "")

    # Not asked for: as callers written before Money read them.
    default = pb.GetCustomerMetricsRequest(store_id=store_id, customer_id=ann.customer_id)
    legacy = plain((await customers.GetCustomerMetrics(default)).metrics)
    assert sorted(m for m in legacy if m[1] in ("total_spent", "avg_order_value")) == [
        ("orders", "avg_order_value", "int_value", 300, "EUR"),
        ("orders", "avg_order_value", "int_value", 500, "JPY"),
        ("orders", "total_spent", "int_value", 300, "EUR"),
        ("orders", "total_spent", "int_value", 500, "JPY"),
    ]
