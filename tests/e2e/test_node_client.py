"""A client in another language: the Node.js walkthrough in clients/node, generated
from protos/ with `buf generate`, run against the real server. It checks every answer
itself; this test also reads what it created back through the Python stubs."""

from __future__ import annotations

import os

from commerce.orders.v1 import customer_order_service_pb2, order_pb2, order_service_pb2

from tests.conftest import NODE_CLIENT
from tests.process import walkthrough


async def test_node_client_walks_through_customers_orders_and_errors(
    built_node_client, server, store_id, orders, customer_orders
):
    seen = await walkthrough(
        "node",
        str(NODE_CLIENT / "dist" / "walkthrough.js"),
        env={
            "PATH": os.environ["PATH"],
            "COMMERCE_TARGET": f"http://127.0.0.1:{server.port}",
            "COMMERCE_STORE_ID": str(store_id),
        },
    )

    assert seen["invalidArgumentFields"] == ["email", "password"]
    assert seen["notFoundReason"] == "CUSTOMER_NOT_FOUND"
    # What the Node client created is what Python reads.
    newest, first = (int(order_id) for order_id in seen["orderIds"])
    # Events come in the order their orders committed.
    assert seen["eventSubjects"] == [f"orders/{first}", f"orders/{newest}"]
    placed = (
        await orders.GetOrder(order_service_pb2.GetOrderRequest(store_id=store_id, order_id=first))
    ).order
    assert placed.customer_id == int(seen["customerId"]) == placed.customer.customer_id
    assert (placed.order_number, placed.total_minor) == (seen["orderNumber"], 5098)
    cancelled = (
        await orders.GetOrder(order_service_pb2.GetOrderRequest(store_id=store_id, order_id=newest))
    ).order
    assert cancelled.status == order_pb2.ORDER_STATUS_CANCELLED
    count = await customer_orders.GetCustomerOrderCount(
        customer_order_service_pb2.GetCustomerOrderCountRequest(
            store_id=store_id, customer_id=placed.customer_id
        )
    )
    assert count.order_count == 2  # the retried CreateOrder made no third order
