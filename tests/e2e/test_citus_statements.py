"""Every statement the server sends to PostgreSQL would route to one Citus shard: each
distributed table it touches is pinned by `store_id = <one value>` in the same query
scope (docs/scaling.md, "Sharding by store with Citus"), but for the statements the
document lists with a reason.

The statements are those the session's server sent in every test before this module
(tests/conftest.py records them and runs this module after the last test on
PostgreSQL), plus those of the calls below, which drive every RPC of every service
once, so that the module run alone still checks each RPC's statements."""

from __future__ import annotations

import uuid

import grpc
import pytest
from commerce.customers.v1 import customer_pb2, customer_service_pb2_grpc
from commerce.events.v1 import event_service_pb2, event_service_pb2_grpc
from commerce.loyalty.v1 import customer_loyalty_service_pb2 as loyalty_pb
from commerce.loyalty.v1 import customer_loyalty_service_pb2_grpc
from commerce.orders.v1 import customer_order_service_pb2 as customer_orders_pb
from commerce.orders.v1 import customer_order_service_pb2_grpc, order_pb2, order_service_pb2_grpc
from commerce.orders.v1 import order_service_pb2 as orders_pb
from google.protobuf import field_mask_pb2

from services.server import Application
from tests.citus import (
    distributed_tables,
    fixed_statements,
    load_statement_exceptions,
    load_table_roles,
    multi_shard_statements,
    on_postgresql,
)
from tests.e2e.helpers import PASSWORD, create_customer, create_order
from tests.e2e.helpers import pb as customers_pb
from tests.statement_log import SERVER_STATEMENTS

S = order_pb2.OrderStatus


def request_id() -> str:
    return str(uuid.uuid4())


async def drive_customers(channel: grpc.aio.Channel, store_id: int) -> int:
    """Every CustomerService RPC once; the id of a customer left in place."""
    stub = customer_service_pb2_grpc.CustomerServiceStub(channel)
    pb = customers_pb
    kept = await create_customer(
        stub, store_id, password=PASSWORD, tags=["vip"], request_id=request_id()
    )
    gone = await create_customer(stub, store_id)
    cid = kept.customer_id
    await stub.GetCustomer(pb.GetCustomerRequest(store_id=store_id, customer_id=cid))
    await stub.BatchGetCustomers(
        pb.BatchGetCustomersRequest(store_id=store_id, customer_ids=[cid, gone.customer_id])
    )
    await stub.UpdateCustomer(
        pb.UpdateCustomerRequest(
            store_id=store_id,
            customer_id=cid,
            customer=customer_pb2.Customer(first_name="Ann"),
            update_mask=field_mask_pb2.FieldMask(paths=["first_name"]),
        )
    )
    for listing in (
        pb.ListCustomersRequest(store_id=store_id, page_size=1),
        pb.ListCustomersRequest(store_id=store_id, query="Ann"),
        pb.ListCustomersRequest(store_id=store_id, tag="vip"),
        pb.ListCustomersRequest(store_id=store_id, status=customer_pb2.CUSTOMER_STATUS_ACTIVE),
    ):
        page = await stub.ListCustomers(listing)
        if page.next_page_token:
            await stub.ListCustomers(
                pb.ListCustomersRequest(store_id=store_id, page_token=page.next_page_token)
            )
    status = pb.SetCustomerStatusRequest(store_id=store_id, customer_id=gone.customer_id)
    status.status = customer_pb2.CUSTOMER_STATUS_INACTIVE
    await stub.SetCustomerStatus(status)
    await stub.AuthenticateCustomer(
        pb.AuthenticateCustomerRequest(store_id=store_id, email=kept.email, password=PASSWORD)
    )
    with pytest.raises(grpc.aio.AioRpcError):  # a failure, counted by the login throttle
        await stub.AuthenticateCustomer(
            pb.AuthenticateCustomerRequest(store_id=store_id, email=kept.email, password="nope")
        )
    await stub.ChangeCustomerPassword(
        pb.ChangeCustomerPasswordRequest(
            store_id=store_id,
            customer_id=cid,
            current_password=PASSWORD,
            new_password=PASSWORD + "!",
        )
    )
    address = customer_pb2.CustomerAddress(
        recipient_name="Ann Smith", address_line1="Main St 1", city="Berlin", country_code="de"
    )
    created = await stub.CreateCustomerAddress(
        pb.CreateCustomerAddressRequest(
            store_id=store_id, customer_id=cid, address=address, request_id=request_id()
        )
    )
    second = await stub.CreateCustomerAddress(
        pb.CreateCustomerAddressRequest(store_id=store_id, customer_id=cid, address=address)
    )
    await stub.UpdateCustomerAddress(
        pb.UpdateCustomerAddressRequest(
            store_id=store_id,
            customer_id=cid,
            address_id=created.address.address_id,
            address=customer_pb2.CustomerAddress(city="Hamburg"),
            update_mask=field_mask_pb2.FieldMask(paths=["city"]),
        )
    )
    await stub.DeleteCustomerAddress(
        pb.DeleteCustomerAddressRequest(
            store_id=store_id, customer_id=cid, address_id=second.address.address_id
        )
    )
    await stub.ListCustomerAddresses(
        pb.ListCustomerAddressesRequest(store_id=store_id, customer_id=cid, page_size=1)
    )
    await stub.GetCustomerMetrics(
        pb.GetCustomerMetricsRequest(store_id=store_id, customer_id=cid, money_values=True)
    )
    tagged = await stub.AddCustomerTags(
        pb.AddCustomerTagsRequest(store_id=store_id, customer_id=cid, tags=["gold", "eu"])
    )
    await stub.RemoveCustomerTags(
        pb.RemoveCustomerTagsRequest(
            store_id=store_id, customer_id=cid, tags=["eu"], etag=tagged.customer.etag
        )
    )
    async for _ in stub.ExportCustomerData(
        pb.ExportCustomerDataRequest(store_id=store_id, customer_id=cid)
    ):
        pass
    async for _ in stub.ExportCustomers(pb.ExportCustomersRequest(store_id=store_id, tag="vip")):
        pass
    async for _ in stub.ExportCustomers(pb.ExportCustomersRequest(store_id=store_id)):
        pass
    await stub.EraseCustomer(
        pb.EraseCustomerRequest(store_id=store_id, customer_id=gone.customer_id)
    )
    return cid


async def drive_orders(channel: grpc.aio.Channel, store_id: int, customer_id: int) -> None:
    """Every OrderService and CustomerOrderService RPC once."""
    stub = order_service_pb2_grpc.OrderServiceStub(channel)
    first = await create_order(stub, store_id, customer_id, request_id=request_id())
    await create_order(stub, store_id, contact_email="guest@example.com")
    await stub.GetOrder(orders_pb.GetOrderRequest(store_id=store_id, order_id=first.order_id))
    for listing in (
        orders_pb.ListOrdersRequest(store_id=store_id, page_size=1),
        orders_pb.ListOrdersRequest(store_id=store_id, customer_id=customer_id),
        orders_pb.ListOrdersRequest(store_id=store_id, guests_only=True),
        orders_pb.ListOrdersRequest(store_id=store_id, statuses=[S.ORDER_STATUS_PENDING]),
    ):
        page = await stub.ListOrders(listing)
        if page.next_page_token:
            await stub.ListOrders(
                orders_pb.ListOrdersRequest(store_id=store_id, page_token=page.next_page_token)
            )
    paid = await stub.PayOrder(
        orders_pb.PayOrderRequest(
            store_id=store_id, order_id=first.order_id, request_id=request_id()
        )
    )
    shipped = await stub.ShipOrder(
        orders_pb.ShipOrderRequest(
            store_id=store_id,
            order_id=first.order_id,
            etag=paid.order.etag,
            tracking_reference="1Z999",
        )
    )
    await stub.DeliverOrder(
        orders_pb.DeliverOrderRequest(
            store_id=store_id, order_id=first.order_id, etag=shipped.order.etag
        )
    )
    other = await create_order(stub, store_id, customer_id)
    await stub.CancelOrder(
        orders_pb.CancelOrderRequest(store_id=store_id, order_id=other.order_id, reason="test")
    )
    third = await create_order(stub, store_id, customer_id)
    await stub.UpdateOrderStatus(
        orders_pb.UpdateOrderStatusRequest(
            store_id=store_id, order_id=third.order_id, status=S.ORDER_STATUS_PAID
        )
    )
    mine = customer_order_service_pb2_grpc.CustomerOrderServiceStub(channel)
    page = await mine.ListCustomerOrders(
        customer_orders_pb.ListCustomerOrdersRequest(
            store_id=store_id, customer_id=customer_id, page_size=1
        )
    )
    await mine.ListCustomerOrders(
        customer_orders_pb.ListCustomerOrdersRequest(
            store_id=store_id, customer_id=customer_id, page_token=page.next_page_token
        )
    )
    await mine.GetRecentCustomerOrders(
        customer_orders_pb.GetRecentCustomerOrdersRequest(
            store_id=store_id, customer_id=customer_id, limit=2
        )
    )
    await mine.GetCustomerOrderCount(
        customer_orders_pb.GetCustomerOrderCountRequest(store_id=store_id, customer_id=customer_id)
    )
    await mine.GetCustomerOrderStats(
        customer_orders_pb.GetCustomerOrderStatsRequest(store_id=store_id, customer_id=customer_id)
    )


async def drive_loyalty(channel: grpc.aio.Channel, store_id: int, customer_id: int) -> None:
    stub = customer_loyalty_service_pb2_grpc.CustomerLoyaltyServiceStub(channel)
    await stub.AddLoyaltyPoints(
        loyalty_pb.AddLoyaltyPointsRequest(
            store_id=store_id, customer_id=customer_id, points=50, reason="welcome"
        )
    )
    await stub.RedeemLoyaltyPoints(
        loyalty_pb.RedeemLoyaltyPointsRequest(
            store_id=store_id,
            customer_id=customer_id,
            points=20,
            reason="coupon",
            request_id=request_id(),
        )
    )
    await stub.GetCustomerLoyalty(
        loyalty_pb.GetCustomerLoyaltyRequest(
            store_id=store_id, customer_id=customer_id, history_limit=5
        )
    )


async def drive_events(channel: grpc.aio.Channel, store_id: int) -> None:
    stub = event_service_pb2_grpc.EventServiceStub(channel)
    page = await stub.ListEvents(event_service_pb2.ListEventsRequest(store_id=store_id))
    await stub.ListEvents(
        event_service_pb2.ListEventsRequest(
            store_id=store_id, page_size=1, types=["commerce.orders.v1.OrderCreated"]
        )
    )
    # The backlog of a stream, then its end: one call's worth of its statements.
    stream = stub.StreamEvents(event_service_pb2.StreamEventsRequest(store_id=store_id))
    try:
        if page.events:
            await stream.read()
    finally:
        stream.cancel()


@on_postgresql
async def test_every_statement_sent_routes_to_one_shard_or_is_listed(
    server: Application, channel: grpc.aio.Channel, store_id: int
) -> None:
    customer_id = await drive_customers(channel, store_id)
    await drive_orders(channel, store_id, customer_id)
    await drive_loyalty(channel, store_id, customer_id)
    await drive_events(channel, store_id)

    roles = load_table_roles()
    exceptions = load_statement_exceptions()
    found = multi_shard_statements(SERVER_STATEMENTS.texts, distributed_tables(roles))
    unlisted = {key: problem for key, problem in found.items() if key not in exceptions}
    assert not unlisted, _report(unlisted)
    # Not checked the other way (a listed statement that was not sent): the
    # housekeeping ones run on timers, and a run of this module alone sends few.


def _report(unlisted: dict[str, str]) -> str:
    return "multi-shard statements not listed in docs/scaling.md:\n" + "\n".join(
        f"- {key}: {problem}" for key, problem in sorted(unlisted.items())
    )


def test_every_fixed_statement_of_the_service_routes_to_one_shard_or_is_listed() -> None:
    """The statements the service modules define once, compiled for PostgreSQL as
    the server sends them: those of code paths no test happened to run included
    (statements built per call are covered by the recording above only). Every
    listed exception is one of them: a stale entry fails."""
    texts = fixed_statements()
    exceptions = load_statement_exceptions()
    found = multi_shard_statements(texts, distributed_tables(load_table_roles()))
    assert not {key for key in found if key not in exceptions}, _report(
        {key: problem for key, problem in found.items() if key not in exceptions}
    )
    assert exceptions <= set(found), f"listed, but no such statement: {exceptions - set(found)}"
