"""Strings a database or a regex may choke on get a clear status, never INTERNAL."""

from __future__ import annotations

import grpc
import pytest
from commerce.customers.v1 import customer_pb2
from commerce.orders.v1 import customer_order_service_pb2 as customer_orders_pb
from commerce.orders.v1 import order_service_pb2 as orders_pb
from google.protobuf import field_mask_pb2, timestamp_pb2

from tests.e2e.helpers import PASSWORD, create_customer, create_order, line, pb, unique_email

HOSTILE = [
    "nul\x00byte",
    "x" * 100_000,
    "Ωμέγα-кириллица-中文-🙂",
    "%_\\' OR 1=1; --",
    "\u202eevil",
    " ",
]
DOCUMENTED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.UNAUTHENTICATED,
}


async def status_of(call) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


@pytest.mark.parametrize("text", HOSTILE)
async def test_hostile_strings_in_every_string_field(customers, store_id, text):
    known = await create_customer(customers, store_id, password=PASSWORD)
    cid = known.customer_id
    calls = {
        "create": customers.CreateCustomer(
            pb.CreateCustomerRequest(
                store_id=store_id,
                email=text,
                password=text,
                first_name=text,
                last_name=text,
                phone=text,
                preferred_language=text,
            )
        ),
        "create-email-only": customers.CreateCustomer(
            pb.CreateCustomerRequest(store_id=store_id, email=unique_email(), first_name=text)
        ),
        "list-query": customers.ListCustomers(
            pb.ListCustomersRequest(store_id=store_id, query=text)
        ),
        "list-token": customers.ListCustomers(
            pb.ListCustomersRequest(store_id=store_id, page_token=text)
        ),
        "login-email": customers.AuthenticateCustomer(
            pb.AuthenticateCustomerRequest(store_id=store_id, email=text, password=PASSWORD)
        ),
        "login-password": customers.AuthenticateCustomer(
            pb.AuthenticateCustomerRequest(store_id=store_id, email=known.email, password=text)
        ),
        "update": customers.UpdateCustomer(
            pb.UpdateCustomerRequest(
                store_id=store_id,
                customer_id=cid,
                customer=customer_pb2.Customer(
                    email=text, first_name=text, phone=text, preferred_language=text
                ),
                update_mask=field_mask_pb2.FieldMask(
                    paths=["email", "first_name", "phone", "preferred_language"]
                ),
            )
        ),
        "update-mask": customers.UpdateCustomer(
            pb.UpdateCustomerRequest(
                store_id=store_id,
                customer_id=cid,
                update_mask=field_mask_pb2.FieldMask(paths=[text]),
            )
        ),
        "password": customers.ChangeCustomerPassword(
            pb.ChangeCustomerPasswordRequest(
                store_id=store_id, customer_id=cid, current_password=text, new_password=text
            )
        ),
        "address": customers.CreateCustomerAddress(
            pb.CreateCustomerAddressRequest(
                store_id=store_id,
                customer_id=cid,
                address=customer_pb2.CustomerAddress(
                    recipient_name=text,
                    address_line1=text,
                    address_line2=text,
                    city=text,
                    postal_code=text,
                    region=text,
                    country_code=text,
                    phone=text,
                ),
            )
        ),
    }
    statuses = {name: await status_of(call) for name, call in calls.items()}
    assert {name: code for name, code in statuses.items() if code not in DOCUMENTED} == {}
    # And the server still serves.
    got = await customers.GetCustomer(pb.GetCustomerRequest(store_id=store_id, customer_id=cid))
    assert got.customer.customer_id == cid


@pytest.mark.parametrize("number", [2**63 - 1, -(2**63)])
async def test_extreme_ids(customers, store_id, number):
    for call in (
        customers.GetCustomer(pb.GetCustomerRequest(store_id=store_id, customer_id=number)),
        customers.GetCustomer(pb.GetCustomerRequest(store_id=number, customer_id=1)),
        customers.DeleteCustomerAddress(
            pb.DeleteCustomerAddressRequest(store_id=store_id, customer_id=1, address_id=number)
        ),
        customers.ListCustomers(pb.ListCustomersRequest(store_id=store_id, page_size=-(2**31))),
    ):
        assert await status_of(call) in {
            grpc.StatusCode.NOT_FOUND,
            grpc.StatusCode.INVALID_ARGUMENT,
        }


@pytest.mark.parametrize("text", HOSTILE)
async def test_hostile_strings_in_every_order_field(orders, customer_orders, store_id, text):
    known = await create_order(orders, store_id)
    calls = {
        "create": create_order(
            orders,
            store_id,
            currency_code=text,
            contact_email=text,
            request_id=text,
            line_items=[line(sku=text, name=text)],
        ),
        "create-lines-only": create_order(orders, store_id, line_items=[line(sku=text, name=text)]),
        "list-token": orders.ListOrders(
            orders_pb.ListOrdersRequest(store_id=store_id, page_token=text)
        ),
        "history-token": customer_orders.ListCustomerOrders(
            customer_orders_pb.ListCustomerOrdersRequest(
                store_id=store_id, customer_id=1, page_token=text
            )
        ),
    }
    statuses = {name: await status_of(call) for name, call in calls.items()}
    assert {name: code for name, code in statuses.items() if code not in DOCUMENTED} == {}
    got = await orders.GetOrder(orders_pb.GetOrderRequest(store_id=store_id, order_id=1))
    assert got.order == known


@pytest.mark.parametrize("number", [2**63 - 1, -(2**63)])
async def test_extreme_numbers_in_orders(orders, customer_orders, store_id, number):
    int32 = max(min(number, 2**31 - 1), -(2**31))
    for call in (
        orders.GetOrder(orders_pb.GetOrderRequest(store_id=store_id, order_id=number)),
        orders.UpdateOrderStatus(
            orders_pb.UpdateOrderStatusRequest(store_id=store_id, order_id=number, status=int32)
        ),
        create_order(orders, store_id, customer_id=number),
        create_order(orders, store_id, line_items=[line(quantity=int32, unit_price_minor=number)]),
        create_order(orders, store_id, line_items=[line(quantity=2, unit_price_minor=2**62)] * 3),
        orders.ListOrders(
            orders_pb.ListOrdersRequest(
                store_id=store_id,
                customer_id=number,
                status=int32,
                create_time_start=timestamp_pb2.Timestamp(seconds=number, nanos=int32),
            )
        ),
        orders.ListOrders(
            orders_pb.ListOrdersRequest(
                store_id=store_id, create_time_end=timestamp_pb2.Timestamp(nanos=int32)
            )
        ),
        customer_orders.GetRecentCustomerOrders(
            customer_orders_pb.GetRecentCustomerOrdersRequest(
                store_id=store_id, customer_id=number, limit=int32
            )
        ),
        customer_orders.GetCustomerOrderStats(
            customer_orders_pb.GetCustomerOrderStatsRequest(store_id=number, customer_id=number)
        ),
    ):
        assert await status_of(call) in {
            grpc.StatusCode.NOT_FOUND,
            grpc.StatusCode.INVALID_ARGUMENT,
        }
