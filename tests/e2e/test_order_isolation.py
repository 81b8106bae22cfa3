"""One store never sees, counts or changes another store's orders, and no order can
point at another store's customer."""

from __future__ import annotations

import grpc
import pytest
from commerce.orders.v1 import customer_order_service_pb2 as customer_orders_pb
from commerce.orders.v1 import order_pb2
from commerce.orders.v1 import order_service_pb2 as pb
from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError

from services.core.db.engine import utc_now
from services.orders.models import Order
from tests.e2e.helpers import create_customer, create_order
from tests.e2e.helpers import pb as customers_pb
from tests.errors import rpc_error

Code = grpc.StatusCode
S = order_pb2.OrderStatus


async def test_every_order_rpc_of_store_b_misses_store_a(
    orders, customers, customer_orders, store_id, other_store_id
):
    a, b = store_id, other_store_id
    victim = await create_customer(customers, a)
    order = await create_order(orders, a, victim.customer_id)
    cid, oid = victim.customer_id, order.order_id

    for call in [
        orders.GetOrder(pb.GetOrderRequest(store_id=b, order_id=oid)),
        orders.UpdateOrderStatus(
            pb.UpdateOrderStatusRequest(store_id=b, order_id=oid, status=S.ORDER_STATUS_CANCELLED)
        ),
        orders.CreateOrder(
            pb.CreateOrderRequest(
                store_id=b, customer_id=cid, currency_code="EUR", line_items=order.line_items
            )
        ),
        customer_orders.ListCustomerOrders(
            customer_orders_pb.ListCustomerOrdersRequest(store_id=b, customer_id=cid)
        ),
        customer_orders.GetRecentCustomerOrders(
            customer_orders_pb.GetRecentCustomerOrdersRequest(store_id=b, customer_id=cid)
        ),
        customer_orders.GetCustomerOrderCount(
            customer_orders_pb.GetCustomerOrderCountRequest(store_id=b, customer_id=cid)
        ),
        customer_orders.GetCustomerOrderStats(
            customer_orders_pb.GetCustomerOrderStatsRequest(store_id=b, customer_id=cid)
        ),
        customers.GetCustomerMetrics(
            customers_pb.GetCustomerMetricsRequest(store_id=b, customer_id=cid)
        ),
    ]:
        await rpc_error(call, Code.NOT_FOUND)

    for request in (
        pb.ListOrdersRequest(store_id=b),
        pb.ListOrdersRequest(store_id=b, customer_id=cid),
        pb.ListOrdersRequest(store_id=b, status=S.ORDER_STATUS_PENDING),
    ):
        assert list((await orders.ListOrders(request)).orders) == []

    # Store A's order is untouched, and A's own page token reads nothing in B.
    assert (await orders.GetOrder(pb.GetOrderRequest(store_id=a, order_id=oid))).order == order
    await create_order(orders, a, cid)
    token = (await orders.ListOrders(pb.ListOrdersRequest(store_id=a, page_size=1))).next_page_token
    await rpc_error(
        orders.ListOrders(pb.ListOrdersRequest(store_id=b, page_token=token)),
        Code.INVALID_ARGUMENT,
    )


async def test_the_database_refuses_an_order_of_another_stores_customer(
    customers, sessions, store_id, other_store_id
):
    """The composite foreign key catches even a bug that skipped the service layer."""
    stranger = await create_customer(customers, other_store_id)
    now = utc_now()
    async with sessions() as session:
        with pytest.raises(IntegrityError):
            await session.execute(
                insert(Order).values(
                    store_id=store_id,
                    order_id=1,
                    order_number="O-000001",
                    customer_id=stranger.customer_id,
                    status="pending",
                    currency_code="EUR",
                    total_minor=0,
                    contact_email="",
                    created_at=now,
                    updated_at=now,
                )
            )
