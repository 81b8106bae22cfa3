"""CustomerOrderService: a customer's order history, count and statistics, the last
checked against a Python oracle over random orders."""

from __future__ import annotations

import random
from collections import defaultdict

import grpc
import pytest
from commerce.orders.v1 import customer_order_service_pb2 as pb
from commerce.orders.v1 import order_pb2
from commerce.orders.v1 import order_service_pb2 as orders_pb

from tests.e2e.helpers import create_customer, create_order, line
from tests.errors import rpc_error

Code = grpc.StatusCode
S = order_pb2.OrderStatus


async def move(orders, order: order_pb2.Order, *statuses: int) -> order_pb2.Order:
    for status in statuses:
        order = (
            await orders.UpdateOrderStatus(
                orders_pb.UpdateOrderStatusRequest(
                    store_id=order.store_id, order_id=order.order_id, status=status
                )
            )
        ).order
    return order


async def test_history_lists_the_customers_orders_newest_first(
    orders, customers, customer_orders, store_id
):
    ann = await create_customer(customers, store_id)
    bob = await create_customer(customers, store_id)
    mine = [await create_order(orders, store_id, ann.customer_id) for _ in range(5)]
    await create_order(orders, store_id, bob.customer_id)
    await create_order(orders, store_id)

    request = pb.ListCustomerOrdersRequest(
        store_id=store_id, customer_id=ann.customer_id, page_size=2
    )
    listed = []
    while True:
        response = await customer_orders.ListCustomerOrders(request)
        assert len(response.orders) <= 2
        listed += response.orders
        if not response.next_page_token:
            break
        request.page_token = response.next_page_token
    assert listed == mine[::-1]
    assert all(order.customer == ann for order in listed)

    # A token of Ann's history is no token for Bob's.
    token = (
        await customer_orders.ListCustomerOrders(
            pb.ListCustomerOrdersRequest(
                store_id=store_id, customer_id=ann.customer_id, page_size=1
            )
        )
    ).next_page_token
    await rpc_error(
        customer_orders.ListCustomerOrders(
            pb.ListCustomerOrdersRequest(
                store_id=store_id, customer_id=bob.customer_id, page_token=token
            )
        ),
        Code.INVALID_ARGUMENT,
    )


@pytest.mark.parametrize(("limit", "expected"), [(0, 5), (2, 2), (500, 8)])
async def test_recent_orders(orders, customers, customer_orders, store_id, limit, expected):
    ann = await create_customer(customers, store_id)
    placed = [await create_order(orders, store_id, ann.customer_id) for _ in range(8)]
    response = await customer_orders.GetRecentCustomerOrders(
        pb.GetRecentCustomerOrdersRequest(
            store_id=store_id, customer_id=ann.customer_id, limit=limit
        )
    )
    assert list(response.orders) == placed[::-1][:expected]


async def test_order_count_with_and_without_a_status(orders, customers, customer_orders, store_id):
    ann = await create_customer(customers, store_id)
    placed = [await create_order(orders, store_id, ann.customer_id) for _ in range(4)]
    await move(orders, placed[0], S.ORDER_STATUS_CANCELLED)
    await create_order(orders, store_id)  # a guest's order is nobody's

    async def count(status: int = S.ORDER_STATUS_UNSPECIFIED) -> int:
        request = pb.GetCustomerOrderCountRequest(
            store_id=store_id, customer_id=ann.customer_id, status=status
        )
        return (await customer_orders.GetCustomerOrderCount(request)).order_count

    assert await count() == 4  # cancelled ones included
    assert await count(S.ORDER_STATUS_PENDING) == 3
    assert await count(S.ORDER_STATUS_CANCELLED) == 1
    assert await count(S.ORDER_STATUS_DELIVERED) == 0


async def test_counts_and_statistics_are_of_the_store_asked(
    orders, customers, customer_orders, store_id, other_store_id
):
    """The same customer id in two stores: each store counts only its own orders."""
    ann = await create_customer(customers, store_id)
    other = await create_customer(customers, other_store_id)
    assert ann.customer_id == other.customer_id  # ids are numbered per store
    for _ in range(3):
        await create_order(orders, store_id, ann.customer_id, line_items=[line(quantity=2)])
    await create_order(orders, other_store_id, other.customer_id, line_items=[line(quantity=5)])

    expected = ((store_id, 3, 3 * 2000), (other_store_id, 1, 5000))
    for store, expected_count, expected_spent in expected:
        count = await customer_orders.GetCustomerOrderCount(
            pb.GetCustomerOrderCountRequest(store_id=store, customer_id=ann.customer_id)
        )
        assert count.order_count == expected_count
        stats = await customer_orders.GetCustomerOrderStats(
            pb.GetCustomerOrderStatsRequest(store_id=store, customer_id=ann.customer_id)
        )
        assert stats.stats.total_orders == expected_count
        assert [m.amount_minor for m in stats.stats.total_spent] == [expected_spent]


async def test_statistics_match_a_python_oracle(orders, customers, customer_orders, store_id):
    rng = random.Random(20261126)  # noqa: S311  (reproducible test data, not secrets)
    ann = await create_customer(customers, store_id)
    bob = await create_customer(customers, store_id)
    placed: list[order_pb2.Order] = []
    # Each order's total as the oracle computes it from the request's own lines (every
    # quantity at least 2), never as the server reports it.
    expected_total: dict[int, int] = {}
    for _ in range(40):
        lines = [
            line(f"SKU-{n}", rng.randint(2, 5), rng.randint(0, 99_999))
            for n in range(rng.randint(1, 3))
        ]
        order = await create_order(
            orders,
            store_id,
            ann.customer_id,
            currency_code=rng.choice(["EUR", "USD", "JPY"]),
            line_items=lines,
        )
        expected_total[order.order_id] = sum(
            item.quantity * item.unit_price_minor for item in lines
        )
        path = rng.choice(
            [
                (),
                (S.ORDER_STATUS_PAID,),
                (S.ORDER_STATUS_PAID, S.ORDER_STATUS_SHIPPED, S.ORDER_STATUS_DELIVERED),
                (S.ORDER_STATUS_CANCELLED,),
                (S.ORDER_STATUS_PAID, S.ORDER_STATUS_CANCELLED),
            ]
        )
        placed.append(await move(orders, order, *path))
    # Noise that must count for Ann in nothing: Bob's orders and a guest's.
    await create_order(orders, store_id, bob.customer_id, line_items=[line(unit_price_minor=7)])
    await create_order(orders, store_id, line_items=[line(unit_price_minor=11)])

    counted = [order for order in placed if order.status != S.ORDER_STATUS_CANCELLED]
    assert 0 < len(counted) < len(placed), "the random orders should include cancelled ones"
    by_currency: dict[str, list[int]] = defaultdict(list)
    for order in counted:
        by_currency[order.currency_code].append(expected_total[order.order_id])

    def half_up(total: int, count: int) -> int:
        whole, rest = divmod(total, count)
        return whole + (1 if 2 * rest >= count else 0)

    stats = (
        await customer_orders.GetCustomerOrderStats(
            pb.GetCustomerOrderStatsRequest(store_id=store_id, customer_id=ann.customer_id)
        )
    ).stats
    assert (stats.store_id, stats.customer_id) == (store_id, ann.customer_id)
    assert stats.total_orders == len(counted)
    assert [(m.currency_code, m.amount_minor) for m in stats.total_spent] == [
        (code, sum(totals)) for code, totals in sorted(by_currency.items())
    ]
    assert [(m.currency_code, m.amount_minor) for m in stats.avg_order_value] == [
        (code, half_up(sum(totals), len(totals))) for code, totals in sorted(by_currency.items())
    ]
    assert stats.first_order_time == min(
        (order.create_time for order in counted), key=lambda t: t.ToNanoseconds()
    )
    assert stats.last_order_time == max(
        (order.create_time for order in counted), key=lambda t: t.ToNanoseconds()
    )


async def test_average_rounds_half_away_from_zero(orders, customers, customer_orders, store_id):
    ann = await create_customer(customers, store_id)
    for price in (100, 101):  # mean 100.5
        await create_order(
            orders, store_id, ann.customer_id, line_items=[line(unit_price_minor=price)]
        )
    stats = (
        await customer_orders.GetCustomerOrderStats(
            pb.GetCustomerOrderStatsRequest(store_id=store_id, customer_id=ann.customer_id)
        )
    ).stats
    assert [m.amount_minor for m in stats.avg_order_value] == [101]


async def test_statistics_of_a_customer_without_counted_orders(
    orders, customers, customer_orders, store_id
):
    ann = await create_customer(customers, store_id)
    request = pb.GetCustomerOrderStatsRequest(store_id=store_id, customer_id=ann.customer_id)
    empty = (await customer_orders.GetCustomerOrderStats(request)).stats
    assert empty.total_orders == 0
    assert list(empty.total_spent) == []
    assert list(empty.avg_order_value) == []
    assert not empty.HasField("first_order_time")
    assert not empty.HasField("last_order_time")

    # An only order that is cancelled leaves the statistics just as empty.
    await move(
        orders, await create_order(orders, store_id, ann.customer_id), S.ORDER_STATUS_CANCELLED
    )
    assert (await customer_orders.GetCustomerOrderStats(request)).stats == empty


async def test_unknown_customers_are_not_found_by_every_rpc(
    customers, customer_orders, store_id, other_store_id
):
    stranger = await create_customer(customers, other_store_id)
    for customer_id in (404, stranger.customer_id):
        calls = [
            customer_orders.ListCustomerOrders(
                pb.ListCustomerOrdersRequest(store_id=store_id, customer_id=customer_id)
            ),
            customer_orders.GetRecentCustomerOrders(
                pb.GetRecentCustomerOrdersRequest(store_id=store_id, customer_id=customer_id)
            ),
            customer_orders.GetCustomerOrderCount(
                pb.GetCustomerOrderCountRequest(store_id=store_id, customer_id=customer_id)
            ),
            customer_orders.GetCustomerOrderStats(
                pb.GetCustomerOrderStatsRequest(store_id=store_id, customer_id=customer_id)
            ),
        ]
        for call in calls:
            failure = await rpc_error(call, Code.NOT_FOUND)
            assert failure.resource_info.resource_type == "customer"
            assert failure.error_info.domain == "commerce.orders.v1"


@pytest.mark.parametrize(
    "call",
    [
        lambda stub, store: stub.ListCustomerOrders(
            pb.ListCustomerOrdersRequest(store_id=store, customer_id=0)
        ),
        lambda stub, store: stub.ListCustomerOrders(
            pb.ListCustomerOrdersRequest(store_id=store, customer_id=1, page_size=-1)
        ),
        lambda stub, store: stub.GetRecentCustomerOrders(
            pb.GetRecentCustomerOrdersRequest(store_id=store, customer_id=1, limit=-1)
        ),
        lambda stub, store: stub.GetCustomerOrderCount(
            pb.GetCustomerOrderCountRequest(store_id=store, customer_id=1, status=17)
        ),
        lambda stub, store: stub.GetCustomerOrderStats(
            pb.GetCustomerOrderStatsRequest(store_id=store, customer_id=-3)
        ),
        lambda stub, store: stub.GetCustomerOrderStats(
            pb.GetCustomerOrderStatsRequest(store_id=0, customer_id=1)
        ),
    ],
)
async def test_bad_requests_are_invalid(customers, customer_orders, store_id, call):
    await create_customer(customers, store_id)
    await rpc_error(call(customer_orders, store_id), Code.INVALID_ARGUMENT)
