"""Canonical resource names (AIP-122): what the resources carry as `name`, what
google.rpc.ResourceInfo names on NOT_FOUND, and what the RPC's log line names."""

from __future__ import annotations

import logging

import grpc
from commerce.customers.v1 import customer_pb2
from commerce.loyalty.v1 import customer_loyalty_service_pb2 as loyalty_pb
from commerce.orders.v1 import customer_order_service_pb2 as customer_orders_pb
from commerce.orders.v1 import order_service_pb2 as orders_pb
from google.protobuf import field_mask_pb2

from tests.e2e.helpers import create_customer, create_order, pb
from tests.errors import rpc_error

Code = grpc.StatusCode


async def test_customers_and_their_orders_carry_their_names(customers, orders, store_id):
    ann = await create_customer(customers, store_id)
    assert ann.name == f"stores/{store_id}/customers/{ann.customer_id}"
    got = await customers.GetCustomer(
        pb.GetCustomerRequest(store_id=store_id, customer_id=ann.customer_id)
    )
    assert got.customer.name == ann.name
    order = await create_order(orders, store_id, ann.customer_id)
    assert order.customer.name == ann.name


async def test_not_found_names_the_customer_in_its_store(
    customers, customer_orders, loyalty, orders, store_id
):
    name = f"stores/{store_id}/customers/404"
    calls = {
        "customers": customers.GetCustomer(
            pb.GetCustomerRequest(store_id=store_id, customer_id=404)
        ),
        "orders": customer_orders.GetCustomerOrderStats(
            customer_orders_pb.GetCustomerOrderStatsRequest(store_id=store_id, customer_id=404)
        ),
        "orders create": create_order(orders, store_id, 404),
        "loyalty": loyalty.GetCustomerLoyalty(
            loyalty_pb.GetCustomerLoyaltyRequest(store_id=store_id, customer_id=404)
        ),
    }
    for module, call in calls.items():
        failure = await rpc_error(call, Code.NOT_FOUND)
        assert (failure.resource_info.resource_type, failure.resource_info.resource_name) == (
            "customer",
            name,
        ), module


async def test_not_found_names_the_order_the_address_and_the_store(customers, orders, store_id):
    failure = await rpc_error(
        orders.GetOrder(orders_pb.GetOrderRequest(store_id=store_id, order_id=9)), Code.NOT_FOUND
    )
    assert failure.resource_info.resource_name == f"stores/{store_id}/orders/9"

    ann = await create_customer(customers, store_id)
    failure = await rpc_error(
        customers.UpdateCustomerAddress(
            pb.UpdateCustomerAddressRequest(
                store_id=store_id,
                customer_id=ann.customer_id,
                address_id=3,
                address=customer_pb2.CustomerAddress(city="Bonn"),
                update_mask=field_mask_pb2.FieldMask(paths=["city"]),
            )
        ),
        Code.NOT_FOUND,
    )
    assert (failure.resource_info.resource_type, failure.resource_info.resource_name) == (
        "address",
        f"stores/{store_id}/customers/{ann.customer_id}/addresses/3",
    )

    failure = await rpc_error(
        customers.GetCustomer(pb.GetCustomerRequest(store_id=987654321, customer_id=1)),
        Code.NOT_FOUND,
    )
    assert (failure.resource_info.resource_type, failure.resource_info.resource_name) == (
        "store",
        "stores/987654321",
    )


async def test_the_log_line_of_a_not_found_names_the_resource(customers, store_id, caplog):
    caplog.set_level(logging.INFO, logger="commerce.rpc")
    await customers.GetCustomer(pb.GetCustomerRequest(store_id=store_id, customer_id=0)).code()
    await rpc_error(
        customers.GetCustomer(pb.GetCustomerRequest(store_id=store_id, customer_id=404)),
        Code.NOT_FOUND,
    )
    lines = [r for r in caplog.records if r.name == "commerce.rpc" and r.store_id == store_id]
    invalid, missing = lines[-2:]
    name = f"stores/{store_id}/customers/404"
    assert missing.resource_name == name
    assert missing.getMessage().endswith(
        f" code=NOT_FOUND duration_ms={missing.duration_ms} resource_name={name}"
    )
    # A failure that names no resource logs no name.
    assert invalid.grpc_code == "INVALID_ARGUMENT"
    assert not hasattr(invalid, "resource_name")
    assert "resource_name" not in invalid.getMessage()
