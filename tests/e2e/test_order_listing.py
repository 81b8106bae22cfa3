"""ListOrders: newest first, keyset pages that never skip or repeat, every filter, and
page tokens bound to their store and filters."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from commerce.orders.v1 import order_pb2
from commerce.orders.v1 import order_service_pb2 as pb
from google.protobuf import timestamp_pb2

from tests.e2e.helpers import create_customer, create_order
from tests.errors import rpc_error

Code = grpc.StatusCode
S = order_pb2.OrderStatus


async def list_all(orders, request: pb.ListOrdersRequest) -> list[order_pb2.Order]:
    """Every page of a listing, following the page tokens."""
    listed: list[order_pb2.Order] = []
    while True:
        response = await orders.ListOrders(request)
        listed += response.orders
        if not response.next_page_token:
            return listed
        request.page_token = response.next_page_token


async def test_orders_are_listed_newest_first_in_pages(orders, store_id):
    placed = [await create_order(orders, store_id) for _ in range(7)]
    first = await orders.ListOrders(pb.ListOrdersRequest(store_id=store_id, page_size=3))
    assert [order.order_id for order in first.orders] == [7, 6, 5]
    assert first.next_page_token
    listed = await list_all(orders, pb.ListOrdersRequest(store_id=store_id, page_size=3))
    assert listed == placed[::-1]


async def test_pages_never_skip_or_repeat_while_orders_arrive(orders, store_id):
    for _ in range(10):
        await create_order(orders, store_id)
    request = pb.ListOrdersRequest(store_id=store_id, page_size=4)
    seen: list[int] = []
    while True:
        response = await orders.ListOrders(request)
        seen += [order.order_id for order in response.orders]
        # New orders are newer than every page still to come: they never appear in it.
        await asyncio.gather(*(create_order(orders, store_id) for _ in range(3)))
        if not response.next_page_token:
            break
        request.page_token = response.next_page_token
    assert seen == list(range(10, 0, -1))


async def test_filters_by_status_and_customer(orders, customers, store_id):
    ann = await create_customer(customers, store_id)
    bob = await create_customer(customers, store_id)
    ann_orders = [await create_order(orders, store_id, ann.customer_id) for _ in range(3)]
    await create_order(orders, store_id, bob.customer_id)
    await create_order(orders, store_id)  # a guest
    await orders.UpdateOrderStatus(
        pb.UpdateOrderStatusRequest(
            store_id=store_id, order_id=ann_orders[1].order_id, status=S.ORDER_STATUS_PAID
        )
    )

    by_ann = await list_all(
        orders, pb.ListOrdersRequest(store_id=store_id, customer_id=ann.customer_id, page_size=2)
    )
    assert [order.order_id for order in by_ann] == [o.order_id for o in ann_orders[::-1]]
    assert all(order.customer == ann for order in by_ann)

    paid = await list_all(
        orders, pb.ListOrdersRequest(store_id=store_id, status=S.ORDER_STATUS_PAID)
    )
    assert [order.order_id for order in paid] == [ann_orders[1].order_id]
    pending_of_ann = await list_all(
        orders,
        pb.ListOrdersRequest(
            store_id=store_id, customer_id=ann.customer_id, status=S.ORDER_STATUS_PENDING
        ),
    )
    assert [order.order_id for order in pending_of_ann] == [
        ann_orders[2].order_id,
        ann_orders[0].order_id,
    ]
    nobody = await orders.ListOrders(pb.ListOrdersRequest(store_id=store_id, customer_id=999))
    assert list(nobody.orders) == []


async def test_filters_by_creation_time(orders, store_id):
    placed = [await create_order(orders, store_id) for _ in range(4)]
    middle = placed[1].create_time

    since = await list_all(
        orders, pb.ListOrdersRequest(store_id=store_id, create_time_start=middle)
    )
    assert [order.order_id for order in since] == [4, 3, 2]  # the start is inclusive
    before = await list_all(orders, pb.ListOrdersRequest(store_id=store_id, create_time_end=middle))
    assert [order.order_id for order in before] == [1]  # the end is exclusive
    window = await list_all(
        orders,
        pb.ListOrdersRequest(
            store_id=store_id,
            create_time_start=middle,
            create_time_end=placed[3].create_time,
            page_size=1,
        ),
    )
    assert [order.order_id for order in window] == [3, 2]


async def test_an_empty_or_reversed_time_window_is_invalid(orders, store_id):
    moment = timestamp_pb2.Timestamp(seconds=1_800_000_000)
    failure = await rpc_error(
        orders.ListOrders(
            pb.ListOrdersRequest(
                store_id=store_id, create_time_start=moment, create_time_end=moment
            )
        ),
        Code.INVALID_ARGUMENT,
    )
    assert failure.violated_fields == {"create_time_end"}


@pytest.mark.parametrize(
    "request_fields",
    [
        {"page_size": -1},
        {"status": 42},
        {"customer_id": -1},
        {"page_token": "not-a-token"},
        {"create_time_start": timestamp_pb2.Timestamp(seconds=-(10**15))},
    ],
)
async def test_bad_list_requests_are_invalid(orders, store_id, request_fields):
    await rpc_error(
        orders.ListOrders(pb.ListOrdersRequest(store_id=store_id, **request_fields)),
        Code.INVALID_ARGUMENT,
    )


async def test_a_page_token_is_bound_to_its_store_and_filters(orders, store_id, other_store_id):
    for _ in range(3):
        await create_order(orders, store_id)
        await create_order(orders, other_store_id)
    token = (
        await orders.ListOrders(pb.ListOrdersRequest(store_id=store_id, page_size=1))
    ).next_page_token
    an_hour_ago = timestamp_pb2.Timestamp()
    an_hour_ago.FromSeconds(int(time.time()) - 3600)
    in_an_hour = timestamp_pb2.Timestamp()
    in_an_hour.FromSeconds(int(time.time()) + 3600)
    for request in (
        pb.ListOrdersRequest(store_id=other_store_id, page_token=token),
        pb.ListOrdersRequest(store_id=store_id, page_token=token, status=S.ORDER_STATUS_PAID),
        pb.ListOrdersRequest(store_id=store_id, page_token=token, customer_id=1),
        # Time filters that match every order still make another query.
        pb.ListOrdersRequest(store_id=store_id, page_token=token, create_time_start=an_hour_ago),
        pb.ListOrdersRequest(store_id=store_id, page_token=token, create_time_end=in_an_hour),
    ):
        failure = await rpc_error(orders.ListOrders(request), Code.INVALID_ARGUMENT)
        assert failure.violated_fields == {"page_token"}
    # The page size may change between pages.
    rest = await orders.ListOrders(
        pb.ListOrdersRequest(store_id=store_id, page_token=token, page_size=10)
    )
    assert [order.order_id for order in rest.orders] == [2, 1]


async def pay(orders, store_id: int, order: order_pb2.Order) -> order_pb2.Order:
    request = pb.PayOrderRequest(store_id=store_id, order_id=order.order_id)
    return (await orders.PayOrder(request)).order


async def test_filters_by_several_statuses_in_pages(orders, store_id):
    placed = [await create_order(orders, store_id) for _ in range(7)]
    paid = [await pay(orders, store_id, order) for order in placed[1::2]]
    cancelled = (
        await orders.CancelOrder(
            pb.CancelOrderRequest(store_id=store_id, order_id=placed[0].order_id, reason="no")
        )
    ).order
    pending = [order for order in placed[2::2]]

    def ids(listed: list[order_pb2.Order]) -> list[int]:
        return [order.order_id for order in listed]

    newest_first = sorted([*paid, cancelled], key=lambda order: -order.order_id)
    for page_size in (1, 2, 10):
        listed = await list_all(
            orders,
            pb.ListOrdersRequest(
                store_id=store_id,
                page_size=page_size,
                statuses=[S.ORDER_STATUS_CANCELLED, S.ORDER_STATUS_PAID, S.ORDER_STATUS_PAID],
            ),
        )
        assert ids(listed) == ids(newest_first)
    one = await list_all(
        orders, pb.ListOrdersRequest(store_id=store_id, statuses=[S.ORDER_STATUS_PENDING])
    )
    assert ids(one) == ids(pending[::-1])
    every = [
        S.ORDER_STATUS_PENDING,
        S.ORDER_STATUS_PAID,
        S.ORDER_STATUS_SHIPPED,
        S.ORDER_STATUS_DELIVERED,
        S.ORDER_STATUS_CANCELLED,
    ]
    listed = await list_all(orders, pb.ListOrdersRequest(store_id=store_id, statuses=every))
    assert ids(listed) == ids(placed[::-1])


async def test_filters_guest_orders(orders, customers, store_id):
    ann = await create_customer(customers, store_id)
    guests = []
    for _ in range(3):
        await create_order(orders, store_id, ann.customer_id)
        guests.append(await create_order(orders, store_id))
    await pay(orders, store_id, guests[1])
    listed = await list_all(
        orders, pb.ListOrdersRequest(store_id=store_id, guests_only=True, page_size=2)
    )
    assert [order.order_id for order in listed] == [order.order_id for order in guests[::-1]]
    assert all(not order.HasField("customer") for order in listed)
    paid_guests = await list_all(
        orders,
        pb.ListOrdersRequest(
            store_id=store_id, guests_only=True, statuses=[S.ORDER_STATUS_PAID], page_size=1
        ),
    )
    assert [order.order_id for order in paid_guests] == [guests[1].order_id]


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"statuses": [S.ORDER_STATUS_UNSPECIFIED]}, "statuses[0]"),
        ({"statuses": [S.ORDER_STATUS_PAID, 42]}, "statuses[1]"),
        ({"statuses": [S.ORDER_STATUS_PAID] * 6}, "statuses"),
        ({"statuses": [S.ORDER_STATUS_PAID], "status": S.ORDER_STATUS_PAID}, "status"),
        ({"guests_only": True, "customer_id": 1}, "guests_only"),
    ],
)
async def test_contradicting_or_bad_status_filters_are_invalid(
    orders, store_id, request_fields, field
):
    failure = await rpc_error(
        orders.ListOrders(pb.ListOrdersRequest(store_id=store_id, **request_fields)),
        Code.INVALID_ARGUMENT,
    )
    assert failure.violated_fields == {field}


async def test_a_page_token_is_bound_to_the_statuses_and_guests_filters(orders, store_id):
    for _ in range(3):
        await pay(orders, store_id, await create_order(orders, store_id))
    first = pb.ListOrdersRequest(
        store_id=store_id, page_size=1, statuses=[S.ORDER_STATUS_PAID, S.ORDER_STATUS_SHIPPED]
    )
    token = (await orders.ListOrders(first)).next_page_token
    assert token
    for request in (
        pb.ListOrdersRequest(store_id=store_id, page_token=token),
        pb.ListOrdersRequest(store_id=store_id, page_token=token, statuses=[S.ORDER_STATUS_PAID]),
        pb.ListOrdersRequest(
            store_id=store_id,
            page_token=token,
            statuses=[S.ORDER_STATUS_PAID, S.ORDER_STATUS_SHIPPED],
            guests_only=True,
        ),
    ):
        failure = await rpc_error(orders.ListOrders(request), Code.INVALID_ARGUMENT)
        assert failure.violated_fields == {"page_token"}
    # The same filters in another order, or repeated, are the same filters.
    same = pb.ListOrdersRequest(
        store_id=store_id,
        page_token=token,
        statuses=[S.ORDER_STATUS_SHIPPED, S.ORDER_STATUS_PAID, S.ORDER_STATUS_PAID],
    )
    assert len((await orders.ListOrders(same)).orders) == 2
    guests = (
        await orders.ListOrders(
            pb.ListOrdersRequest(store_id=store_id, page_size=1, guests_only=True)
        )
    ).next_page_token
    failure = await rpc_error(
        orders.ListOrders(pb.ListOrdersRequest(store_id=store_id, page_token=guests)),
        Code.INVALID_ARGUMENT,
    )
    assert failure.violated_fields == {"page_token"}
    # The deprecated single status and a one-status `statuses` are one filter.
    single = (
        await orders.ListOrders(
            pb.ListOrdersRequest(store_id=store_id, page_size=1, status=S.ORDER_STATUS_PAID)
        )
    ).next_page_token
    rest = await orders.ListOrders(
        pb.ListOrdersRequest(store_id=store_id, page_token=single, statuses=[S.ORDER_STATUS_PAID])
    )
    assert len(rest.orders) == 2
