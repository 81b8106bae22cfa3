"""The server keeps what the protos' field behaviors promise, for every RPC the
descriptors list: a request without one of its REQUIRED fields is INVALID_ARGUMENT
with a BadRequest violation naming that field, and OUTPUT_ONLY fields a caller sends
inside a resource are ignored.

Each RPC starts from a valid request of the table below (which must list every RPC:
a new one fails `test_every_rpc_has_a_valid_request` until it is added), then loses
one REQUIRED field at a time; the fields come from the descriptors."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from commerce.customers.v1 import customer_pb2, customer_service_pb2, customer_service_pb2_grpc
from commerce.events.v1 import event_service_pb2 as events_pb
from commerce.loyalty.v1 import customer_loyalty_service_pb2 as loyalty_pb
from commerce.orders.v1 import customer_order_service_pb2 as customer_orders_pb
from commerce.orders.v1 import order_pb2, order_service_pb2, order_service_pb2_grpc
from google.protobuf import field_mask_pb2, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message

from tests.descriptors import OUTPUT_ONLY, behaviors, commerce_files, is_required, method_path
from tests.descriptors import methods as all_methods
from tests.e2e.helpers import PASSWORD, create_customer, create_order, line, unique_email
from tests.errors import RpcFailure, parse

pb = customer_service_pb2
orders_pb = order_service_pb2

METHODS: dict[str, MethodDescriptor] = {
    method_path(method): method for method in all_methods(commerce_files())
}

CUSTOMERS = "commerce.customers.v1.CustomerService"
ORDERS = "commerce.orders.v1.OrderService"
CUSTOMER_ORDERS = "commerce.orders.v1.CustomerOrderService"
LOYALTY = "commerce.loyalty.v1.CustomerLoyaltyService"
EVENTS = "commerce.events.v1.EventService"

# RPCs being built alongside these checks: where they still answer UNIMPLEMENTED,
# their cases skip (saying so) instead of failing. Any other RPC must be served.
IN_PROGRESS = {
    f"{ORDERS}/PayOrder",
    f"{ORDERS}/ShipOrder",
    f"{ORDERS}/DeliverOrder",
    f"{ORDERS}/CancelOrder",
    f"{CUSTOMERS}/BatchGetCustomers",
}


@dataclass
class Store:
    """A fresh store and what a valid request may need to exist in it."""

    store_id: int
    channel: grpc.aio.Channel
    customers: customer_service_pb2_grpc.CustomerServiceStub
    orders: order_service_pb2_grpc.OrderServiceStub

    def call(self, path: str, request: Message) -> Awaitable[Message]:
        """Calls the RPC `path` ('package.Service/Method') as a generated stub would."""
        answer = message_factory.GetMessageClass(METHODS[path].output_type)
        if METHODS[path].server_streaming:
            return self._stream_opened(path, request, answer)
        rpc = self.channel.unary_unary(
            f"/{path}",
            request_serializer=type(request).SerializeToString,
            response_deserializer=answer.FromString,
        )
        return rpc(request)  # type: ignore[no-any-return]

    async def _stream_opened(self, path: str, request: Message, answer: type[Message]) -> Message:
        """A server stream's answer to its request: its failure, or (once the server
        accepted the call and sent its headers) an empty message; the stream is then
        closed."""
        rpc = self.channel.unary_stream(
            f"/{path}",
            request_serializer=type(request).SerializeToString,
            response_deserializer=answer.FromString,
        )
        call = rpc(request)
        try:
            await call.initial_metadata()
            if call.done():  # refused: the status came with the headers
                await call.read()
            return answer()
        finally:
            call.cancel()

    async def customer(self) -> int:
        customer = await create_customer(self.customers, self.store_id, password=PASSWORD)
        return customer.customer_id

    async def address(self, customer_id: int) -> int:
        response = await self.customers.CreateCustomerAddress(
            pb.CreateCustomerAddressRequest(
                store_id=self.store_id, customer_id=customer_id, address=an_address()
            )
        )
        return response.address.address_id

    async def order(self, *path: int) -> int:
        """An order of a new customer, moved along `path` (statuses) from PENDING."""
        order = await create_order(self.orders, self.store_id, await self.customer())
        for status in path:
            await self.orders.UpdateOrderStatus(
                orders_pb.UpdateOrderStatusRequest(
                    store_id=self.store_id, order_id=order.order_id, status=status
                )
            )
        return order.order_id


def an_address(**fields: Any) -> customer_pb2.CustomerAddress:
    values = {
        "recipient_name": "Ada Lovelace",
        "address_line1": "1 Analytical Row",
        "city": "London",
        "country_code": "GB",
    }
    return customer_pb2.CustomerAddress(**(values | fields))


def request_id() -> str:
    return str(uuid.uuid4())


Builder = Callable[[Store], Awaitable[Message]]


async def _create_customer(s: Store) -> Message:
    return pb.CreateCustomerRequest(
        store_id=s.store_id, email=unique_email(), password=PASSWORD, request_id=request_id()
    )


async def _get_customer(s: Store) -> Message:
    return pb.GetCustomerRequest(store_id=s.store_id, customer_id=await s.customer())


async def _batch_get_customers(s: Store) -> Message:
    return pb.BatchGetCustomersRequest(store_id=s.store_id, customer_ids=[await s.customer()])


async def _update_customer(s: Store) -> Message:
    return pb.UpdateCustomerRequest(
        store_id=s.store_id,
        customer_id=await s.customer(),
        customer=customer_pb2.Customer(first_name="Grace"),
        update_mask=field_mask_pb2.FieldMask(paths=["first_name"]),
    )


async def _list_customers(s: Store) -> Message:
    return pb.ListCustomersRequest(store_id=s.store_id)


async def _set_customer_status(s: Store) -> Message:
    return pb.SetCustomerStatusRequest(
        store_id=s.store_id,
        customer_id=await s.customer(),
        status=customer_pb2.CUSTOMER_STATUS_INACTIVE,
    )


async def _authenticate_customer(s: Store) -> Message:
    email = unique_email()
    await create_customer(s.customers, s.store_id, email=email, password=PASSWORD)
    return pb.AuthenticateCustomerRequest(store_id=s.store_id, email=email, password=PASSWORD)


async def _change_customer_password(s: Store) -> Message:
    return pb.ChangeCustomerPasswordRequest(
        store_id=s.store_id,
        customer_id=await s.customer(),
        current_password=PASSWORD,
        new_password="another horse battery",
    )


async def _create_customer_address(s: Store) -> Message:
    return pb.CreateCustomerAddressRequest(
        store_id=s.store_id,
        customer_id=await s.customer(),
        address=an_address(),
        request_id=request_id(),
    )


async def _update_customer_address(s: Store) -> Message:
    customer_id = await s.customer()
    return pb.UpdateCustomerAddressRequest(
        store_id=s.store_id,
        customer_id=customer_id,
        address_id=await s.address(customer_id),
        # An optional field: leaving out `address` must fail on its own account.
        address=customer_pb2.CustomerAddress(address_line2="Flat 2"),
        update_mask=field_mask_pb2.FieldMask(paths=["address_line2"]),
    )


async def _delete_customer_address(s: Store) -> Message:
    customer_id = await s.customer()
    return pb.DeleteCustomerAddressRequest(
        store_id=s.store_id, customer_id=customer_id, address_id=await s.address(customer_id)
    )


async def _erase_customer(s: Store) -> Message:
    return pb.EraseCustomerRequest(store_id=s.store_id, customer_id=await s.customer())


async def _list_customer_addresses(s: Store) -> Message:
    return pb.ListCustomerAddressesRequest(store_id=s.store_id, customer_id=await s.customer())


async def _get_customer_metrics(s: Store) -> Message:
    return pb.GetCustomerMetricsRequest(store_id=s.store_id, customer_id=await s.customer())


async def _add_customer_tags(s: Store) -> Message:
    return pb.AddCustomerTagsRequest(
        store_id=s.store_id, customer_id=await s.customer(), tags=["vip"]
    )


async def _remove_customer_tags(s: Store) -> Message:
    return pb.RemoveCustomerTagsRequest(
        store_id=s.store_id, customer_id=await s.customer(), tags=["vip"]
    )


async def _create_order(s: Store) -> Message:
    return orders_pb.CreateOrderRequest(
        store_id=s.store_id,
        customer_id=await s.customer(),
        line_items=[line()],
        currency_code="EUR",
        request_id=request_id(),
    )


async def _get_order(s: Store) -> Message:
    return orders_pb.GetOrderRequest(store_id=s.store_id, order_id=await s.order())


async def _list_orders(s: Store) -> Message:
    return orders_pb.ListOrdersRequest(store_id=s.store_id)


async def _update_order_status(s: Store) -> Message:
    return orders_pb.UpdateOrderStatusRequest(
        store_id=s.store_id, order_id=await s.order(), status=order_pb2.ORDER_STATUS_PAID
    )


async def _pay_order(s: Store) -> Message:
    return orders_pb.PayOrderRequest(store_id=s.store_id, order_id=await s.order())


async def _ship_order(s: Store) -> Message:
    order_id = await s.order(order_pb2.ORDER_STATUS_PAID)
    return orders_pb.ShipOrderRequest(store_id=s.store_id, order_id=order_id)


async def _deliver_order(s: Store) -> Message:
    order_id = await s.order(order_pb2.ORDER_STATUS_PAID, order_pb2.ORDER_STATUS_SHIPPED)
    return orders_pb.DeliverOrderRequest(store_id=s.store_id, order_id=order_id)


async def _cancel_order(s: Store) -> Message:
    return orders_pb.CancelOrderRequest(
        store_id=s.store_id, order_id=await s.order(), reason="changed my mind"
    )


def _for_a_customer(kind: type[Message]) -> Builder:
    """A request that names a store and a customer and needs nothing else."""

    async def build(s: Store) -> Message:
        return kind(store_id=s.store_id, customer_id=await s.customer())

    return build


async def _add_loyalty_points(s: Store) -> Message:
    return loyalty_pb.AddLoyaltyPointsRequest(
        store_id=s.store_id, customer_id=await s.customer(), points=100, reason="welcome"
    )


async def _redeem_loyalty_points(s: Store) -> Message:
    customer_id = await s.customer()
    await s.call(
        f"{LOYALTY}/AddLoyaltyPoints",
        loyalty_pb.AddLoyaltyPointsRequest(
            store_id=s.store_id, customer_id=customer_id, points=100, reason="welcome"
        ),
    )
    return loyalty_pb.RedeemLoyaltyPointsRequest(
        store_id=s.store_id, customer_id=customer_id, points=40, reason="a mug"
    )


async def _list_events(s: Store) -> Message:
    return events_pb.ListEventsRequest(store_id=s.store_id, page_size=10)


async def _stream_events(s: Store) -> Message:
    return events_pb.StreamEventsRequest(store_id=s.store_id, only_new=True)


async def _export_customers(s: Store) -> Message:
    return pb.ExportCustomersRequest(store_id=s.store_id)


VALID_REQUESTS: dict[str, Builder] = {
    f"{EVENTS}/ListEvents": _list_events,
    f"{EVENTS}/StreamEvents": _stream_events,
    f"{CUSTOMERS}/CreateCustomer": _create_customer,
    f"{CUSTOMERS}/GetCustomer": _get_customer,
    f"{CUSTOMERS}/BatchGetCustomers": _batch_get_customers,
    f"{CUSTOMERS}/UpdateCustomer": _update_customer,
    f"{CUSTOMERS}/ListCustomers": _list_customers,
    f"{CUSTOMERS}/SetCustomerStatus": _set_customer_status,
    f"{CUSTOMERS}/AuthenticateCustomer": _authenticate_customer,
    f"{CUSTOMERS}/ChangeCustomerPassword": _change_customer_password,
    f"{CUSTOMERS}/CreateCustomerAddress": _create_customer_address,
    f"{CUSTOMERS}/UpdateCustomerAddress": _update_customer_address,
    f"{CUSTOMERS}/DeleteCustomerAddress": _delete_customer_address,
    f"{CUSTOMERS}/ListCustomerAddresses": _list_customer_addresses,
    f"{CUSTOMERS}/GetCustomerMetrics": _get_customer_metrics,
    f"{CUSTOMERS}/AddCustomerTags": _add_customer_tags,
    f"{CUSTOMERS}/RemoveCustomerTags": _remove_customer_tags,
    f"{CUSTOMERS}/EraseCustomer": _erase_customer,
    f"{CUSTOMERS}/ExportCustomerData": _for_a_customer(pb.ExportCustomerDataRequest),
    f"{CUSTOMERS}/ExportCustomers": _export_customers,
    f"{ORDERS}/CreateOrder": _create_order,
    f"{ORDERS}/GetOrder": _get_order,
    f"{ORDERS}/ListOrders": _list_orders,
    f"{ORDERS}/UpdateOrderStatus": _update_order_status,
    f"{ORDERS}/PayOrder": _pay_order,
    f"{ORDERS}/ShipOrder": _ship_order,
    f"{ORDERS}/DeliverOrder": _deliver_order,
    f"{ORDERS}/CancelOrder": _cancel_order,
    f"{CUSTOMER_ORDERS}/ListCustomerOrders": _for_a_customer(
        customer_orders_pb.ListCustomerOrdersRequest
    ),
    f"{CUSTOMER_ORDERS}/GetRecentCustomerOrders": _for_a_customer(
        customer_orders_pb.GetRecentCustomerOrdersRequest
    ),
    f"{CUSTOMER_ORDERS}/GetCustomerOrderCount": _for_a_customer(
        customer_orders_pb.GetCustomerOrderCountRequest
    ),
    f"{CUSTOMER_ORDERS}/GetCustomerOrderStats": _for_a_customer(
        customer_orders_pb.GetCustomerOrderStatsRequest
    ),
    f"{LOYALTY}/GetCustomerLoyalty": _for_a_customer(loyalty_pb.GetCustomerLoyaltyRequest),
    f"{LOYALTY}/AddLoyaltyPoints": _add_loyalty_points,
    f"{LOYALTY}/RedeemLoyaltyPoints": _redeem_loyalty_points,
}


def required_paths(message: Descriptor, prefix: str = "") -> Iterator[str]:
    """The REQUIRED fields of `message` as paths, and those of the REQUIRED messages
    it holds (`address.city`, `line_items[0].sku`): what a caller must send."""
    for field in message.fields:
        if not is_required(field):
            continue
        path = prefix + field.name
        yield path
        if field.message_type is not None and not field.message_type.GetOptions().map_entry:
            inner = f"{path}[0]." if field.is_repeated else f"{path}."
            yield from required_paths(field.message_type, inner)


def _cases() -> Iterator[tuple[str, str]]:
    for path, method in METHODS.items():
        for field in required_paths(method.input_type):
            yield path, field


def _steps(path: str) -> list[tuple[str, int | None]]:
    """'line_items[0].sku' -> [('line_items', 0), ('sku', None)]."""
    steps: list[tuple[str, int | None]] = []
    for part in path.split("."):
        name, _, index = part.partition("[")
        steps.append((name, int(index.rstrip("]")) if index else None))
    return steps


def without(request: Message, path: str) -> Message:
    """A copy of `request` with the field at `path` cleared. Under a field mask
    (an update), the mask then names that field, so the server must apply the
    empty value rather than leave the field as it is."""
    copy = type(request)()
    copy.CopyFrom(request)
    holder: Any = copy
    steps = _steps(path)
    for name, index in steps[:-1]:
        holder = getattr(holder, name)
        if index is not None:
            holder = holder[index]
    holder.ClearField(steps[-1][0])
    if len(steps) == 2 and "update_mask" in copy.DESCRIPTOR.fields_by_name:
        copy.update_mask.paths[:] = [steps[-1][0]]  # type: ignore[attr-defined]
    return copy


def names(violation_field: str, path: str) -> bool:
    """Whether a violation's field is `path` or lies inside it (a message left out
    is reported through the REQUIRED fields it lacks)."""
    return violation_field == path or violation_field.startswith((f"{path}.", f"{path}["))


@pytest.fixture
def store(store_id: int, channel: grpc.aio.Channel, customers: Any, orders: Any) -> Store:
    return Store(store_id, channel, customers, orders)


def valid_request_of(path: str) -> Builder:
    builder = VALID_REQUESTS.get(path)
    if builder is None:
        pytest.fail(f"{path} has no valid request: add one to VALID_REQUESTS")
    return builder


async def answer_to(store: Store, path: str, request: Message) -> Message | RpcFailure:
    """The response, or the failure; a skip for an RPC still in progress (IN_PROGRESS)
    that this build does not serve yet."""
    try:
        return await store.call(path, request)
    except grpc.aio.AioRpcError as error:
        failure = parse(error)
    if failure.code == grpc.StatusCode.UNIMPLEMENTED and path in IN_PROGRESS:
        pytest.skip(f"{path} is not implemented in this build yet (UNIMPLEMENTED)")
    return failure


def test_every_rpc_has_a_valid_request():
    assert sorted(set(METHODS) - set(VALID_REQUESTS)) == [], "RPCs without a valid request"
    assert sorted(set(VALID_REQUESTS) - set(METHODS)) == [], "valid requests of no RPC"


@pytest.mark.parametrize("path", sorted(METHODS))
async def test_the_valid_request_of_each_rpc_succeeds(store: Store, path: str) -> None:
    """The starting point of the other cases is a request the server accepts."""
    answer = await answer_to(store, path, await valid_request_of(path)(store))
    assert isinstance(answer, Message), f"{path}: {answer.code.name} {answer.message}"


# REQUIRED fields whose absence the server answers otherwise, on purpose: a login
# without an email or a password fails like every other failed login (the RPC's
# contract: no failure tells one cause from another).
OTHERWISE_REFUSED = {
    (f"{CUSTOMERS}/AuthenticateCustomer", "email"): (
        grpc.StatusCode.UNAUTHENTICATED,
        "INVALID_CREDENTIALS",
    ),
    (f"{CUSTOMERS}/AuthenticateCustomer", "password"): (
        grpc.StatusCode.UNAUTHENTICATED,
        "INVALID_CREDENTIALS",
    ),
}


@pytest.mark.parametrize(("path", "field"), sorted(_cases()))
async def test_a_missing_required_field_is_invalid_argument_naming_it(
    store: Store, path: str, field: str
) -> None:
    request = without(await valid_request_of(path)(store), field)
    answer = await answer_to(store, path, request)
    assert not isinstance(answer, Message), f"{path} accepted a request without {field}"
    if (path, field) in OTHERWISE_REFUSED:
        code, reason = OTHERWISE_REFUSED[path, field]
        assert answer.code == code, f"{path} without {field}: {answer.code.name}"
        assert answer.error_info is not None
        assert answer.error_info.reason == reason
        return
    assert answer.code == grpc.StatusCode.INVALID_ARGUMENT, (
        f"{path} without {field}: {answer.code.name} {answer.message}"
    )
    assert answer.bad_request is not None, f"{path} without {field}: no BadRequest"
    assert any(names(violated, field) for violated in answer.violated_fields), (
        f"{path} without {field}: violations name {sorted(answer.violated_fields)}"
    )


# -- OUTPUT_ONLY fields sent by a caller ---------------------------------------------------

# Where the answer shows the resource a request field carries in.
RESOURCE_IN_ANSWER: dict[tuple[str, str], Callable[[Any], Message]] = {
    (f"{CUSTOMERS}/UpdateCustomer", "customer"): lambda answer: answer.customer,
    (f"{CUSTOMERS}/CreateCustomerAddress", "address"): lambda answer: answer.address,
    (f"{CUSTOMERS}/UpdateCustomerAddress", "address"): lambda answer: answer.address,
    (f"{ORDERS}/CreateOrder", "line_items"): lambda answer: answer.order.line_items[0],
}


def embedded_resources() -> Iterator[tuple[str, str]]:
    """(RPC, request field) of every request field that carries one of our messages."""
    for path, method in METHODS.items():
        for field in method.input_type.fields:
            if field.message_type is not None and field.message_type.full_name.startswith(
                "commerce."
            ):
                yield path, field.name


def junk(message: Message) -> None:
    """Sets every singular field of `message` (nested ones too) to an unlikely value."""
    for field in message.DESCRIPTOR.fields:
        if field.is_repeated:
            continue
        if field.message_type is not None:
            junk(getattr(message, field.name))
        elif field.enum_type is not None:
            setattr(message, field.name, field.enum_type.values[-1].number)
        elif field.type == FieldDescriptor.TYPE_BOOL:
            setattr(message, field.name, True)
        elif field.type == FieldDescriptor.TYPE_STRING:
            setattr(message, field.name, f"junk-{uuid.uuid4().hex[:8]}")
        else:
            setattr(message, field.name, 987654321)


def output_only_fields(message: Descriptor) -> list[FieldDescriptor]:
    return [field for field in message.fields if OUTPUT_ONLY in behaviors(field)]


def test_every_embedded_resource_is_checked():
    assert sorted(embedded_resources()) == sorted(RESOURCE_IN_ANSWER)


def _resource_of(request: Message, field: str) -> Message:
    value = getattr(request, field)
    repeated = request.DESCRIPTOR.fields_by_name[field].is_repeated
    return value[0] if repeated else value  # type: ignore[no-any-return]


@pytest.mark.parametrize(("path", "field"), sorted(RESOURCE_IN_ANSWER))
async def test_output_only_fields_sent_in_a_resource_are_ignored(
    store: Store, path: str, field: str
) -> None:
    """Every OUTPUT_ONLY field of the resource is set to junk (update masks left
    empty, the case where the server picks the fields to change itself): the call
    succeeds, and the answer shows the junk nowhere it would not have shown anyway."""
    resource_in = RESOURCE_IN_ANSWER[path, field]
    plain = await answer_to(store, path, await valid_request_of(path)(store))
    assert isinstance(plain, Message), f"{path}: {plain.code.name} {plain.message}"
    request = await valid_request_of(path)(store)
    if "update_mask" in request.DESCRIPTOR.fields_by_name:
        request.ClearField("update_mask")
    sent = _resource_of(request, field)
    fields = output_only_fields(sent.DESCRIPTOR)
    assert fields, f"{sent.DESCRIPTOR.full_name} has no OUTPUT_ONLY field to check"
    for output_only in fields:
        if output_only.is_repeated:
            continue
        if output_only.message_type is not None:
            junk(getattr(sent, output_only.name))
        else:
            holder = type(sent)()
            junk(holder)
            setattr(sent, output_only.name, getattr(holder, output_only.name))
    answer = await answer_to(store, path, request)
    assert isinstance(answer, Message), f"{path}: {answer.code.name} {answer.message}"
    shown, control = resource_in(answer), resource_in(plain)
    for output_only in fields:
        value = getattr(shown, output_only.name)
        if value == getattr(sent, output_only.name) and value != getattr(control, output_only.name):
            pytest.fail(f"{path}: {field}.{output_only.name} took the caller's {value!r}")


def test_the_junk_reaches_every_output_only_field():
    """The check above would pass vacuously if `junk` left a field at its default."""
    for _, field in RESOURCE_IN_ANSWER:
        resource = {"customer": customer_pb2.Customer, "address": customer_pb2.CustomerAddress}
        holder = resource.get(field, order_pb2.OrderLineItem)()
        junk(holder)
        for output_only in output_only_fields(holder.DESCRIPTOR):
            if output_only.message_type is not None:
                assert holder.HasField(output_only.name), output_only.full_name
            elif not output_only.is_repeated:
                assert getattr(holder, output_only.name), output_only.full_name
