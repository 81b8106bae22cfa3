"""Every change a write RPC makes is recorded as its event, in its transaction: read
straight from the outbox through the real gRPC server, on both databases. Every RPC
the protos declare that is not a read must have a scenario here (the guard)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import grpc
import pytest
from commerce.customers.v1 import customer_pb2, customer_service_pb2_grpc
from commerce.customers.v1 import customer_service_pb2 as cpb
from commerce.loyalty.v1 import customer_loyalty_service_pb2 as lpb
from commerce.loyalty.v1 import customer_loyalty_service_pb2_grpc
from commerce.orders.v1 import order_pb2, order_service_pb2_grpc
from commerce.orders.v1 import order_service_pb2 as opb
from google.protobuf import field_mask_pb2

from tests.descriptors import commerce_files, method_path, methods
from tests.e2e.helpers import create_customer, create_order, unique_email
from tests.recorded_events import EventLog, Recorded

# RPCs that change nothing: reads (an export places events in the feed, as the relay
# would, but changes no resource), and a login (its throttle counts are bookkeeping,
# not a change of any resource).
READ_PREFIXES = ("Get", "List", "BatchGet", "Stream", "Export", "Authenticate")


def mutating_rpcs() -> list[str]:
    """Every RPC of the protos that may change data, by gRPC path."""
    return sorted(
        method_path(method)
        for method in methods(commerce_files())
        if not method.name.startswith(READ_PREFIXES)
    )


@dataclass
class Stubs:
    customers: customer_service_pb2_grpc.CustomerServiceStub
    orders: order_service_pb2_grpc.OrderServiceStub
    loyalty: customer_loyalty_service_pb2_grpc.CustomerLoyaltyServiceStub
    store_id: int
    log: EventLog


def customer_subject(customer_id: int) -> str:
    return f"customers/{customer_id}"


def customer_name(store_id: int, customer_id: int) -> str:
    return f"stores/{store_id}/customers/{customer_id}"


def address_subject(address: customer_pb2.CustomerAddress) -> str:
    return f"customers/{address.customer_id}/addresses/{address.address_id}"


def without_customer(order: order_pb2.Order) -> order_pb2.Order:
    event_order = order_pb2.Order()
    event_order.CopyFrom(order)
    event_order.ClearField("customer")
    return event_order


def an_address(**fields: object) -> customer_pb2.CustomerAddress:
    values: dict[str, object] = {
        "recipient_name": "Ann Example",
        "address_line1": "1 Main St",
        "city": "Springfield",
        "country_code": "US",
    }
    return customer_pb2.CustomerAddress(**(values | fields))


async def add_address(s: Stubs, customer_id: int, **fields: object) -> customer_pb2.CustomerAddress:
    response = await s.customers.CreateCustomerAddress(
        cpb.CreateCustomerAddressRequest(
            store_id=s.store_id, customer_id=customer_id, address=an_address(**fields)
        )
    )
    return response.address


async def listed_addresses(s: Stubs, customer_id: int) -> dict[int, customer_pb2.CustomerAddress]:
    response = await s.customers.ListCustomerAddresses(
        cpb.ListCustomerAddressesRequest(store_id=s.store_id, customer_id=customer_id)
    )
    return {address.address_id: address for address in response.addresses}


def assert_event(
    event: Recorded, s: Stubs, event_type: str, module: str, subject: str, sequence: int
) -> None:
    assert (event.event_type, event.module, event.subject, event.sequence, event.store_id) == (
        event_type,
        module,
        subject,
        sequence,
        s.store_id,
    )
    uuid.UUID(event.event_id)


# -- one scenario per write RPC: arrange, clear the log, call it once, check its event ----


async def create_customer_scenario(s: Stubs) -> None:
    customer = await create_customer(s.customers, s.store_id, first_name="Ann")
    event = await s.log.one()
    assert_event(
        event,
        s,
        "commerce.customers.v1.CustomerCreated",
        "customers",
        customer_subject(customer.customer_id),
        1,
    )
    assert event.payload.customer == customer
    assert event.payload.customer.name == customer_name(s.store_id, customer.customer_id)


async def update_customer_scenario(s: Stubs) -> None:
    customer = await create_customer(s.customers, s.store_id, first_name="Ann", last_name="Lee")
    await s.log.new()
    response = await s.customers.UpdateCustomer(
        cpb.UpdateCustomerRequest(
            store_id=s.store_id,
            customer_id=customer.customer_id,
            # last_name is sent with the value it has: not a change.
            customer=customer_pb2.Customer(first_name="Anna", last_name="Lee", phone="+1 555"),
            update_mask=field_mask_pb2.FieldMask(paths=["first_name", "last_name", "phone"]),
        )
    )
    event = await s.log.one()
    assert_event(
        event,
        s,
        "commerce.customers.v1.CustomerUpdated",
        "customers",
        customer_subject(customer.customer_id),
        2,
    )
    assert event.payload.customer == response.customer
    assert list(event.payload.changed_fields.paths) == ["first_name", "phone"]


async def set_customer_status_scenario(s: Stubs) -> None:
    customer = await create_customer(s.customers, s.store_id)
    await s.log.new()
    response = await s.customers.SetCustomerStatus(
        cpb.SetCustomerStatusRequest(
            store_id=s.store_id,
            customer_id=customer.customer_id,
            status=customer_pb2.CUSTOMER_STATUS_INACTIVE,
        )
    )
    event = await s.log.one()
    assert_event(
        event,
        s,
        "commerce.customers.v1.CustomerStatusChanged",
        "customers",
        customer_subject(customer.customer_id),
        2,
    )
    assert event.payload.customer == response.customer
    assert event.payload.old_status == customer_pb2.CUSTOMER_STATUS_ACTIVE
    assert event.payload.new_status == customer_pb2.CUSTOMER_STATUS_INACTIVE


async def erase_customer_scenario(s: Stubs) -> None:
    customer = await create_customer(s.customers, s.store_id, first_name="Ann")
    await s.log.new()
    response = await s.customers.EraseCustomer(
        cpb.EraseCustomerRequest(store_id=s.store_id, customer_id=customer.customer_id)
    )
    event = await s.log.one()
    assert_event(
        event,
        s,
        "commerce.customers.v1.CustomerErased",
        "customers",
        customer_subject(customer.customer_id),
        2,
    )
    # Ids, the name and the time: no personal data.
    assert event.payload.store_id == s.store_id
    assert event.payload.customer_id == customer.customer_id
    assert event.payload.customer == customer_name(s.store_id, customer.customer_id)
    assert event.payload.erase_time == response.customer.erase_time


async def change_password_scenario(s: Stubs) -> None:
    customer = await create_customer(s.customers, s.store_id)
    await s.log.new()
    response = await s.customers.ChangeCustomerPassword(
        cpb.ChangeCustomerPasswordRequest(
            store_id=s.store_id, customer_id=customer.customer_id, new_password="first secret 1"
        )
    )
    event = await s.log.one()
    assert_event(
        event,
        s,
        "commerce.customers.v1.CustomerUpdated",
        "customers",
        customer_subject(customer.customer_id),
        2,
    )
    assert event.payload.customer == response.customer
    assert event.payload.customer.has_password
    assert list(event.payload.changed_fields.paths) == ["has_password"]
    # A second change: the password changes, no field a caller sees does.
    again = await s.customers.ChangeCustomerPassword(
        cpb.ChangeCustomerPasswordRequest(
            store_id=s.store_id,
            customer_id=customer.customer_id,
            current_password="first secret 1",
            new_password="second secret 2",
        )
    )
    second = await s.log.one()
    assert (second.event_type, second.sequence) == ("commerce.customers.v1.CustomerUpdated", 3)
    assert second.payload.customer == again.customer
    assert list(second.payload.changed_fields.paths) == []


async def create_address_scenario(s: Stubs) -> None:
    customer = await create_customer(s.customers, s.store_id)
    await s.log.new()
    address = await add_address(s, customer.customer_id, city="Shelbyville")
    event = await s.log.one()
    assert_event(
        event,
        s,
        "commerce.customers.v1.CustomerAddressCreated",
        "customers",
        address_subject(address),
        1,
    )
    assert event.payload.address == address
    assert event.payload.address.name == (
        f"stores/{s.store_id}/customers/{customer.customer_id}/addresses/{address.address_id}"
    )


async def update_address_scenario(s: Stubs) -> None:
    customer = await create_customer(s.customers, s.store_id)
    address = await add_address(s, customer.customer_id)
    await s.log.new()
    response = await s.customers.UpdateCustomerAddress(
        cpb.UpdateCustomerAddressRequest(
            store_id=s.store_id,
            customer_id=customer.customer_id,
            address_id=address.address_id,
            address=an_address(city="Capital City", postal_code="12345"),
            update_mask=field_mask_pb2.FieldMask(paths=["city", "postal_code", "country_code"]),
        )
    )
    event = await s.log.one()
    assert_event(
        event,
        s,
        "commerce.customers.v1.CustomerAddressUpdated",
        "customers",
        address_subject(address),
        2,
    )
    assert event.payload.address == response.address
    assert list(event.payload.changed_fields.paths) == ["city", "postal_code"]


async def delete_address_scenario(s: Stubs) -> None:
    customer = await create_customer(s.customers, s.store_id)
    address = await add_address(s, customer.customer_id)
    await s.log.new()
    await s.customers.DeleteCustomerAddress(
        cpb.DeleteCustomerAddressRequest(
            store_id=s.store_id, customer_id=customer.customer_id, address_id=address.address_id
        )
    )
    event = await s.log.one()
    assert_event(
        event,
        s,
        "commerce.customers.v1.CustomerAddressDeleted",
        "customers",
        address_subject(address),
        2,
    )
    payload = event.payload
    assert (payload.store_id, payload.customer_id, payload.address_id, payload.address) == (
        s.store_id,
        customer.customer_id,
        address.address_id,
        address.name,
    )


async def create_order_scenario(s: Stubs) -> None:
    customer = await create_customer(s.customers, s.store_id)
    await s.log.new()
    order = await create_order(s.orders, s.store_id, customer.customer_id)
    event = await s.log.one()
    assert_event(
        event, s, "commerce.orders.v1.OrderCreated", "orders", f"orders/{order.order_id}", 1
    )
    assert order.HasField("customer")  # the response still carries the deprecated copy
    assert not event.payload.order.HasField("customer")
    assert event.payload.order == without_customer(order)
    assert event.payload.customer == customer_name(s.store_id, customer.customer_id)
    # A guest's order names no customer.
    guest = await create_order(s.orders, s.store_id)
    guest_event = await s.log.one()
    assert guest_event.payload.order == without_customer(guest)
    assert guest_event.payload.customer == ""


@dataclass(frozen=True)
class Transition:
    """A status change RPC: the statuses it moves an order between, how to get the
    order there first, and the call."""

    arrange: tuple[str, ...]
    old: order_pb2.OrderStatus.ValueType
    new: order_pb2.OrderStatus.ValueType


async def transition_scenario(s: Stubs, rpc: str, transition: Transition) -> None:
    customer = await create_customer(s.customers, s.store_id)
    order = await create_order(s.orders, s.store_id, customer.customer_id)
    for step in transition.arrange:
        await call_transition(s, step, order.order_id)
    await s.log.new()
    moved = await call_transition(s, rpc, order.order_id)
    event = await s.log.one()
    assert_event(
        event,
        s,
        "commerce.orders.v1.OrderStatusChanged",
        "orders",
        f"orders/{order.order_id}",
        2 + len(transition.arrange),
    )
    assert (event.payload.old_status, event.payload.new_status) == (
        transition.old,
        transition.new,
    )
    assert event.payload.order == without_customer(moved)
    assert event.payload.order.status == transition.new
    assert event.payload.customer == customer_name(s.store_id, customer.customer_id)


async def call_transition(s: Stubs, rpc: str, order_id: int, **fields: object) -> order_pb2.Order:
    key = {"store_id": s.store_id, "order_id": order_id} | fields
    if rpc == "PayOrder":
        return (await s.orders.PayOrder(opb.PayOrderRequest(**key))).order
    if rpc == "ShipOrder":
        key.setdefault("tracking_reference", "TRACK-1")
        return (await s.orders.ShipOrder(opb.ShipOrderRequest(**key))).order
    if rpc == "DeliverOrder":
        return (await s.orders.DeliverOrder(opb.DeliverOrderRequest(**key))).order
    if rpc == "CancelOrder":
        key.setdefault("reason", "changed my mind")
        return (await s.orders.CancelOrder(opb.CancelOrderRequest(**key))).order
    raise AssertionError(rpc)


async def update_order_status_scenario(s: Stubs) -> None:
    order = await create_order(s.orders, s.store_id)
    await s.log.new()
    response = await s.orders.UpdateOrderStatus(
        opb.UpdateOrderStatusRequest(
            store_id=s.store_id, order_id=order.order_id, status=order_pb2.ORDER_STATUS_PAID
        )
    )
    event = await s.log.one()
    assert_event(
        event, s, "commerce.orders.v1.OrderStatusChanged", "orders", f"orders/{order.order_id}", 2
    )
    assert (event.payload.old_status, event.payload.new_status) == (
        order_pb2.ORDER_STATUS_PENDING,
        order_pb2.ORDER_STATUS_PAID,
    )
    assert event.payload.order == without_customer(response.order)
    assert event.payload.customer == ""


async def loyalty_scenario(s: Stubs, redeem: bool) -> None:
    customer = await create_customer(s.customers, s.store_id)
    subject = f"customers/{customer.customer_id}/loyalty"
    await s.log.new()
    added = await s.loyalty.AddLoyaltyPoints(
        lpb.AddLoyaltyPointsRequest(
            store_id=s.store_id, customer_id=customer.customer_id, points=700, reason="order"
        )
    )
    response: lpb.AddLoyaltyPointsResponse | lpb.RedeemLoyaltyPointsResponse = added
    expected = ("commerce.loyalty.v1.LoyaltyPointsAdded", 1)
    if redeem:
        await s.log.new()
        response = await s.loyalty.RedeemLoyaltyPoints(
            lpb.RedeemLoyaltyPointsRequest(
                store_id=s.store_id, customer_id=customer.customer_id, points=200, reason="gift"
            )
        )
        expected = ("commerce.loyalty.v1.LoyaltyPointsRedeemed", 2)
    event = await s.log.one()
    assert_event(event, s, expected[0], "loyalty", subject, expected[1])
    assert event.payload.movement == response.movement
    assert event.payload.loyalty == response.loyalty
    assert event.payload.customer == customer_name(s.store_id, customer.customer_id)
    assert event.payload.movement.points == (-200 if redeem else 700)
    assert event.payload.loyalty.points_balance == (500 if redeem else 700)


async def add_points_scenario(s: Stubs) -> None:
    await loyalty_scenario(s, redeem=False)


async def redeem_points_scenario(s: Stubs) -> None:
    await loyalty_scenario(s, redeem=True)


def _transition(rpc: str, arrange: tuple[str, ...], old: int, new: int) -> Scenario:
    async def scenario(s: Stubs) -> None:
        await transition_scenario(s, rpc, Transition(arrange, old, new))  # type: ignore[arg-type]

    return scenario


def _tags_scenario(rpc: str, before: list[str], tags: list[str], after: list[str]) -> Scenario:
    """AddCustomerTags or RemoveCustomerTags: a customer with `before`, the call with
    `tags`, one CustomerUpdated naming `tags` with the customer as it is `after`."""

    async def scenario(s: Stubs) -> None:
        customer = await create_customer(s.customers, s.store_id, tags=before)
        await s.log.new()
        request = getattr(cpb, f"{rpc}Request")
        response = await getattr(s.customers, rpc)(
            request(store_id=s.store_id, customer_id=customer.customer_id, tags=tags)
        )
        event = await s.log.one()
        assert_event(
            event,
            s,
            "commerce.customers.v1.CustomerUpdated",
            "customers",
            customer_subject(customer.customer_id),
            2,
        )
        assert event.payload.customer == response.customer
        assert list(event.payload.customer.tags) == after
        assert list(event.payload.changed_fields.paths) == ["tags"]

    return scenario


Scenario = Callable[[Stubs], Awaitable[None]]
_ORDERS = "commerce.orders.v1.OrderService/"
_CUSTOMERS = "commerce.customers.v1.CustomerService/"
_LOYALTY = "commerce.loyalty.v1.CustomerLoyaltyService/"
# Every write RPC, with the scenario that checks the one event it records.
SCENARIOS: dict[str, Scenario] = {
    _CUSTOMERS + "CreateCustomer": create_customer_scenario,
    _CUSTOMERS + "UpdateCustomer": update_customer_scenario,
    _CUSTOMERS + "SetCustomerStatus": set_customer_status_scenario,
    _CUSTOMERS + "ChangeCustomerPassword": change_password_scenario,
    _CUSTOMERS + "EraseCustomer": erase_customer_scenario,
    _CUSTOMERS + "CreateCustomerAddress": create_address_scenario,
    _CUSTOMERS + "UpdateCustomerAddress": update_address_scenario,
    _CUSTOMERS + "DeleteCustomerAddress": delete_address_scenario,
    _CUSTOMERS + "AddCustomerTags": _tags_scenario(
        "AddCustomerTags", ["b"], ["A", "b"], ["a", "b"]
    ),
    _CUSTOMERS + "RemoveCustomerTags": _tags_scenario(
        "RemoveCustomerTags", ["a", "b"], ["A", "c"], ["b"]
    ),
    _ORDERS + "CreateOrder": create_order_scenario,
    _ORDERS + "UpdateOrderStatus": update_order_status_scenario,
    _ORDERS + "PayOrder": _transition(
        "PayOrder", (), order_pb2.ORDER_STATUS_PENDING, order_pb2.ORDER_STATUS_PAID
    ),
    _ORDERS + "ShipOrder": _transition(
        "ShipOrder", ("PayOrder",), order_pb2.ORDER_STATUS_PAID, order_pb2.ORDER_STATUS_SHIPPED
    ),
    _ORDERS + "DeliverOrder": _transition(
        "DeliverOrder",
        ("PayOrder", "ShipOrder"),
        order_pb2.ORDER_STATUS_SHIPPED,
        order_pb2.ORDER_STATUS_DELIVERED,
    ),
    _ORDERS + "CancelOrder": _transition(
        "CancelOrder", (), order_pb2.ORDER_STATUS_PENDING, order_pb2.ORDER_STATUS_CANCELLED
    ),
    _LOYALTY + "AddLoyaltyPoints": add_points_scenario,
    _LOYALTY + "RedeemLoyaltyPoints": redeem_points_scenario,
}


@pytest.fixture
def stubs(customers, orders, loyalty, sessions, store_id) -> Stubs:
    return Stubs(customers, orders, loyalty, store_id, EventLog(sessions, store_id))


def test_every_write_rpc_has_a_scenario():
    """A new RPC that changes data must say which event it records (a scenario
    below), or be named a read by READ_PREFIXES."""
    assert sorted(SCENARIOS) == mutating_rpcs()


@pytest.mark.parametrize("rpc", mutating_rpcs())
async def test_a_write_rpc_records_its_one_event(stubs, rpc):
    scenario = SCENARIOS.get(rpc)
    assert scenario is not None, f"{rpc} changes data: give it a scenario of its event"
    await scenario(stubs)


async def test_cancelling_a_paid_order_records_paid_as_the_old_status(stubs):
    order = await create_order(stubs.orders, stubs.store_id)
    await call_transition(stubs, "PayOrder", order.order_id)
    await stubs.log.new()
    await call_transition(stubs, "CancelOrder", order.order_id)
    event = await stubs.log.one()
    assert (event.payload.old_status, event.payload.new_status, event.sequence) == (
        order_pb2.ORDER_STATUS_PAID,
        order_pb2.ORDER_STATUS_CANCELLED,
        3,
    )


async def test_sequences_count_each_subject_in_commit_order(stubs):
    s = stubs
    customer = await create_customer(s.customers, s.store_id)
    other = await create_customer(s.customers, s.store_id)
    await s.customers.SetCustomerStatus(
        cpb.SetCustomerStatusRequest(
            store_id=s.store_id,
            customer_id=customer.customer_id,
            status=customer_pb2.CUSTOMER_STATUS_INACTIVE,
        )
    )
    await s.customers.SetCustomerStatus(
        cpb.SetCustomerStatusRequest(
            store_id=s.store_id,
            customer_id=customer.customer_id,
            status=customer_pb2.CUSTOMER_STATUS_ACTIVE,
        )
    )
    order = await create_order(s.orders, s.store_id, customer.customer_id)
    for rpc in ("PayOrder", "ShipOrder", "DeliverOrder"):
        await call_transition(s, rpc, order.order_id)
    events = await s.log.all()
    by_subject: dict[str, list[tuple[str, int]]] = {}
    for event in events:
        by_subject.setdefault(event.subject, []).append((event.short_type, event.sequence))
    assert by_subject == {
        customer_subject(customer.customer_id): [
            ("CustomerCreated", 1),
            ("CustomerStatusChanged", 2),
            ("CustomerStatusChanged", 3),
        ],
        customer_subject(other.customer_id): [("CustomerCreated", 1)],
        f"orders/{order.order_id}": [
            ("OrderCreated", 1),
            ("OrderStatusChanged", 2),
            ("OrderStatusChanged", 3),
            ("OrderStatusChanged", 4),
        ],
    }
    assert [event.id for event in events] == sorted(event.id for event in events)


async def test_an_address_that_loses_a_default_flag_records_its_update(stubs):
    s = stubs
    customer = await create_customer(s.customers, s.store_id)
    first = await add_address(s, customer.customer_id, default_shipping=True, default_billing=True)
    await s.log.new()

    second = await add_address(s, customer.customer_id, default_shipping=True)
    lost, created = await s.log.new()
    assert (lost.short_type, lost.subject, lost.sequence) == (
        "CustomerAddressUpdated",
        address_subject(first),
        2,
    )
    assert list(lost.payload.changed_fields.paths) == ["default_shipping"]
    now = await listed_addresses(s, customer.customer_id)
    assert lost.payload.address == now[first.address_id]
    assert not lost.payload.address.default_shipping
    assert lost.payload.address.default_billing
    assert (created.short_type, created.payload.address) == ("CustomerAddressCreated", second)

    # An update that takes both flags: one event for the address that had each.
    await s.customers.UpdateCustomerAddress(
        cpb.UpdateCustomerAddressRequest(
            store_id=s.store_id,
            customer_id=customer.customer_id,
            address_id=second.address_id,
            address=an_address(default_billing=True),
            update_mask=field_mask_pb2.FieldMask(paths=["default_billing"]),
        )
    )
    lost, updated = await s.log.new()
    assert (lost.subject, list(lost.payload.changed_fields.paths), lost.sequence) == (
        address_subject(first),
        ["default_billing"],
        3,
    )
    assert (updated.subject, list(updated.payload.changed_fields.paths)) == (
        address_subject(second),
        ["default_billing"],
    )

    # A new address that takes both flags from the one that has both: one event for it,
    # listing both.
    third = await add_address(s, customer.customer_id, default_shipping=True, default_billing=True)
    lost, created = await s.log.new()
    assert (lost.subject, list(lost.payload.changed_fields.paths), lost.sequence) == (
        address_subject(second),
        ["default_shipping", "default_billing"],
        3,
    )
    now = await listed_addresses(s, customer.customer_id)
    assert lost.payload.address == now[second.address_id]
    assert created.payload.address == third


async def test_a_change_to_the_same_values_records_nothing(stubs):
    """Written with the values it has, a customer (or address) takes a new etag, as
    it always did, but there is no change to tell."""
    s = stubs
    customer = await create_customer(s.customers, s.store_id, first_name="Ann")
    address = await add_address(s, customer.customer_id, city="Springfield")
    await s.log.new()
    updated = await s.customers.UpdateCustomer(
        cpb.UpdateCustomerRequest(
            store_id=s.store_id,
            customer_id=customer.customer_id,
            customer=customer_pb2.Customer(first_name="Ann"),
            update_mask=field_mask_pb2.FieldMask(paths=["first_name"]),
        )
    )
    assert updated.customer.etag != customer.etag
    await s.customers.UpdateCustomerAddress(
        cpb.UpdateCustomerAddressRequest(
            store_id=s.store_id,
            customer_id=customer.customer_id,
            address_id=address.address_id,
            address=an_address(city="Springfield"),
            update_mask=field_mask_pb2.FieldMask(paths=["city"]),
        )
    )
    unchanged = await s.customers.SetCustomerStatus(
        cpb.SetCustomerStatusRequest(
            store_id=s.store_id,
            customer_id=customer.customer_id,
            status=customer_pb2.CUSTOMER_STATUS_ACTIVE,
        )
    )
    assert unchanged.customer.etag == updated.customer.etag
    assert await s.log.new() == []


async def expect_status(call: Awaitable[object], code: grpc.StatusCode) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    assert raised.value.code() == code


async def test_failed_writes_record_nothing(stubs):
    s = stubs
    customer = await create_customer(s.customers, s.store_id)
    address = await add_address(s, customer.customer_id)
    order = await create_order(s.orders, s.store_id, customer.customer_id)
    await s.customers.SetCustomerStatus(
        cpb.SetCustomerStatusRequest(
            store_id=s.store_id,
            customer_id=customer.customer_id,
            status=customer_pb2.CUSTOMER_STATUS_INACTIVE,
        )
    )
    await s.log.new()
    not_found, failed, aborted, exists = (
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.ALREADY_EXISTS,
    )
    # Called one after the other: a stub call starts the RPC as soon as it is made.
    attempts: list[tuple[Callable[[], Awaitable[object]], grpc.StatusCode]] = [
        (
            lambda: s.customers.UpdateCustomer(
                cpb.UpdateCustomerRequest(
                    store_id=s.store_id,
                    customer_id=999_999,
                    customer=customer_pb2.Customer(first_name="X"),
                    update_mask=field_mask_pb2.FieldMask(paths=["first_name"]),
                )
            ),
            not_found,
        ),
        (
            lambda: s.customers.UpdateCustomer(
                cpb.UpdateCustomerRequest(
                    store_id=s.store_id,
                    customer_id=customer.customer_id,
                    customer=customer_pb2.Customer(first_name="X", etag=customer.etag),
                    update_mask=field_mask_pb2.FieldMask(paths=["first_name"]),
                )
            ),
            aborted,
        ),
        (
            lambda: s.customers.CreateCustomer(
                cpb.CreateCustomerRequest(store_id=s.store_id, email=customer.email)
            ),
            exists,
        ),
        (
            lambda: s.customers.SetCustomerStatus(
                cpb.SetCustomerStatusRequest(
                    store_id=s.store_id,
                    customer_id=customer.customer_id,
                    status=customer_pb2.CUSTOMER_STATUS_ACTIVE,
                    etag=customer.etag,
                )
            ),
            aborted,
        ),
        (
            lambda: s.customers.DeleteCustomerAddress(
                cpb.DeleteCustomerAddressRequest(
                    store_id=s.store_id,
                    customer_id=customer.customer_id,
                    address_id=address.address_id,
                    etag="stale",
                )
            ),
            aborted,
        ),
        (
            lambda: s.customers.DeleteCustomerAddress(
                cpb.DeleteCustomerAddressRequest(
                    store_id=s.store_id, customer_id=customer.customer_id, address_id=999_999
                )
            ),
            not_found,
        ),
        (lambda: create_order(s.orders, s.store_id, customer.customer_id), failed),
        (lambda: call_transition(s, "DeliverOrder", order.order_id), failed),
        (lambda: call_transition(s, "PayOrder", 999_999), not_found),
        (lambda: call_transition(s, "PayOrder", order.order_id, etag="r7"), aborted),
        (
            lambda: s.loyalty.AddLoyaltyPoints(
                lpb.AddLoyaltyPointsRequest(
                    store_id=s.store_id, customer_id=customer.customer_id, points=5, reason="x"
                )
            ),
            failed,
        ),
    ]
    for call, code in attempts:
        await expect_status(call(), code)
    await s.customers.SetCustomerStatus(
        cpb.SetCustomerStatusRequest(
            store_id=s.store_id,
            customer_id=customer.customer_id,
            status=customer_pb2.CUSTOMER_STATUS_ACTIVE,
        )
    )
    await s.log.new()
    await expect_status(
        s.loyalty.RedeemLoyaltyPoints(
            lpb.RedeemLoyaltyPointsRequest(
                store_id=s.store_id, customer_id=customer.customer_id, points=5, reason="x"
            )
        ),
        failed,
    )
    assert await s.log.new() == []


async def test_a_retried_request_records_its_event_once(stubs):
    s = stubs

    def request_id() -> str:
        return str(uuid.uuid4())

    async def twice(call: Callable[[], Awaitable[object]]) -> list[str]:
        first = await call()
        again = await call()
        assert first == again
        return [event.short_type for event in await s.log.new()]

    customer_key = request_id()
    email = unique_email()

    async def create() -> object:
        request = cpb.CreateCustomerRequest(
            store_id=s.store_id, email=email, request_id=customer_key
        )
        return (await s.customers.CreateCustomer(request)).customer

    assert await twice(create) == ["CustomerCreated"]
    customer_id = (await s.log.all())[-1].payload.customer.customer_id

    address_key = request_id()

    async def create_address() -> object:
        request = cpb.CreateCustomerAddressRequest(
            store_id=s.store_id,
            customer_id=customer_id,
            address=an_address(),
            request_id=address_key,
        )
        return (await s.customers.CreateCustomerAddress(request)).address

    assert await twice(create_address) == ["CustomerAddressCreated"]

    order_key = request_id()

    async def place() -> object:
        return await create_order(s.orders, s.store_id, customer_id, request_id=order_key)

    assert await twice(place) == ["OrderCreated"]
    order_id = (await s.log.all())[-1].payload.order.order_id

    for rpc in ("PayOrder", "CancelOrder"):
        key = request_id()

        async def move(rpc: str = rpc, key: str = key) -> object:
            return await call_transition(s, rpc, order_id, request_id=key)

        assert await twice(move) == ["OrderStatusChanged"]

    for points_key, add in ((request_id(), True), (request_id(), False)):

        async def move_points(points_key: str = points_key, add: bool = add) -> object:
            fields = {
                "store_id": s.store_id,
                "customer_id": customer_id,
                "points": 10,
                "reason": "retry",
                "request_id": points_key,
            }
            if add:
                return await s.loyalty.AddLoyaltyPoints(lpb.AddLoyaltyPointsRequest(**fields))
            return await s.loyalty.RedeemLoyaltyPoints(lpb.RedeemLoyaltyPointsRequest(**fields))

        expected = "LoyaltyPointsAdded" if add else "LoyaltyPointsRedeemed"
        assert await twice(move_points) == [expected]


async def test_no_payload_carries_a_password_or_its_hash(stubs, sessions):
    s = stubs
    first, second = "first-Pass-word-9", "second-Pass-word-8"
    customer = await create_customer(s.customers, s.store_id, password=first)
    await s.customers.ChangeCustomerPassword(
        cpb.ChangeCustomerPasswordRequest(
            store_id=s.store_id,
            customer_id=customer.customer_id,
            current_password=first,
            new_password=second,
        )
    )
    await s.customers.UpdateCustomer(
        cpb.UpdateCustomerRequest(
            store_id=s.store_id,
            customer_id=customer.customer_id,
            customer=customer_pb2.Customer(first_name="Ann"),
            update_mask=field_mask_pb2.FieldMask(paths=["first_name"]),
        )
    )
    await s.customers.AuthenticateCustomer(
        cpb.AuthenticateCustomerRequest(store_id=s.store_id, email=customer.email, password=second)
    )
    events = await s.log.all()
    assert [event.short_type for event in events] == [
        "CustomerCreated",
        "CustomerUpdated",
        "CustomerUpdated",
    ]
    assert all(event.payload.customer.has_password for event in events)
    for event in events:
        for secret in (first.encode(), second.encode(), b"$2b$", b"$2a$", b"$2y$"):
            assert secret not in event.raw_payload
