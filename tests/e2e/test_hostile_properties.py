"""Property-based hostile input (hypothesis): every RPC of every service gets random
and extreme requests built from its own descriptor. Only documented codes come back,
never INTERNAL or UNKNOWN, nothing crashes, and the server keeps serving. Page tokens
are tamper-evident and bound to their store and query."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from commerce.customers.v1 import customer_pb2, customer_service_pb2, customer_service_pb2_grpc
from commerce.loyalty.v1 import customer_loyalty_service_pb2 as loyalty_pb
from commerce.loyalty.v1 import customer_loyalty_service_pb2_grpc
from commerce.orders.v1 import customer_order_service_pb2 as customer_orders_pb
from commerce.orders.v1 import (
    customer_order_service_pb2_grpc,
    order_pb2,
    order_service_pb2,
    order_service_pb2_grpc,
)
from google.protobuf import message_factory
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.e2e.helpers import PASSWORD
from tests.process import ServerProcess, clean_environment, commerce, health_status, running_server
from tests.strategies import messages, page_tokens

Code = grpc.StatusCode
DOCUMENTED = {
    Code.OK,
    Code.INVALID_ARGUMENT,
    Code.NOT_FOUND,
    Code.ALREADY_EXISTS,
    Code.FAILED_PRECONDITION,
    Code.UNAUTHENTICATED,
    Code.ABORTED,
}
SERVICES = [
    customer_service_pb2.DESCRIPTOR.services_by_name["CustomerService"],
    order_service_pb2.DESCRIPTOR.services_by_name["OrderService"],
    customer_orders_pb.DESCRIPTOR.services_by_name["CustomerOrderService"],
    loyalty_pb.DESCRIPTOR.services_by_name["CustomerLoyaltyService"],
]
METHODS = [method for service in SERVICES for method in service.methods]


@dataclass
class Target:
    server: ServerProcess
    channel: grpc.Channel
    store_id: int
    other_store_id: int
    known: dict[str, object]
    customer_tokens: list[str]


def store(env: dict[str, str], name: str) -> int:
    output = commerce("stores", "create", "--name", name, env=env).stdout
    return int(output.split()[2])


@pytest.fixture(scope="module")
def target(tmp_path_factory, database_url, backend) -> Iterator[Target]:
    """A server (its own process, so that these synchronous tests can call it) with
    two stores and some data in the first."""
    directory: Path = tmp_path_factory.mktemp("hostile")
    url = f"sqlite:///{directory / 'hostile.db'}" if backend == "sqlite" else database_url
    env = clean_environment(DATABASE_URL=url, COMMERCE_BCRYPT_ROUNDS="4")
    commerce("migrate", env=env)
    a, b = store(env, "hostile A"), store(env, "hostile B")
    with running_server(directory, env) as server, grpc.insecure_channel(server.target) as channel:
        customers = customer_service_pb2_grpc.CustomerServiceStub(channel)
        orders = order_service_pb2_grpc.OrderServiceStub(channel)
        ids, emails = [], []
        for _ in range(3):
            email = f"h{uuid.uuid4().hex[:8]}@example.com"
            created = customers.CreateCustomer(
                customer_service_pb2.CreateCustomerRequest(
                    store_id=a, email=email, password=PASSWORD, first_name="Hos"
                )
            ).customer
            ids.append(created.customer_id)
            emails.append(email)
        address = customers.CreateCustomerAddress(
            customer_service_pb2.CreateCustomerAddressRequest(
                store_id=a,
                customer_id=ids[0],
                address=customer_pb2.CustomerAddress(
                    recipient_name="H", address_line1="1 St", city="C", country_code="DE"
                ),
            )
        ).address
        order = orders.CreateOrder(
            order_service_pb2.CreateOrderRequest(
                store_id=a,
                customer_id=ids[0],
                currency_code="EUR",
                line_items=[
                    order_pb2.OrderLineItem(sku="S", name="N", quantity=1, unit_price_minor=5)
                ],
            )
        ).order
        orders.CreateOrder(
            order_service_pb2.CreateOrderRequest(
                store_id=a, customer_id=ids[0], currency_code="EUR", line_items=order.line_items
            )
        )
        customer_loyalty_service_pb2_grpc.CustomerLoyaltyServiceStub(channel).AddLoyaltyPoints(
            loyalty_pb.AddLoyaltyPointsRequest(
                store_id=a, customer_id=ids[0], points=50, reason="r"
            )
        )
        tokens = [
            customers.ListCustomers(
                customer_service_pb2.ListCustomersRequest(store_id=a, page_size=1)
            ).next_page_token,
            orders.ListOrders(
                order_service_pb2.ListOrdersRequest(store_id=a, page_size=1)
            ).next_page_token,
        ]
        known = {
            "store_id": [a, a, a, b],
            "customer_id": ids,
            "order_id": [order.order_id],
            "address_id": [address.address_id],
            "email": emails,
            "password": [PASSWORD],
            "current_password": [PASSWORD],
            "currency_code": ["EUR", "JPY", "usd"],
            "request_id": [str(uuid.uuid4()), "5f0c1d2e-8a4b-4c6d-9e7f-0a1b2c3d4e5f"],
            "page_token": page_tokens(tokens),
            "paths": [
                "first_name",
                "email",
                "phone",
                "status",
                "etag",
                "customer_id",
                "city",
                "*",
                "",
            ],
        }
        yield Target(server, channel, a, b, known, tokens[:1])


def rpc(channel: grpc.Channel, method) -> Callable[..., object]:
    """The method's call; a server stream's answer is the list of its messages."""
    response_class = message_factory.GetMessageClass(method.output_type)
    path = f"/{method.containing_service.full_name}/{method.name}"
    if method.server_streaming:
        stream = channel.unary_stream(
            path,
            request_serializer=lambda message: message.SerializeToString(),
            response_deserializer=response_class.FromString,
        )
        return lambda request, timeout: list(stream(request, timeout=timeout))
    return channel.unary_unary(
        path,
        request_serializer=lambda message: message.SerializeToString(),
        response_deserializer=response_class.FromString,
    )


def outcome(call: Callable[[], object]) -> tuple[Code, object]:
    """(OK, the response) or (the error's code, its message)."""
    try:
        return Code.OK, call()
    except grpc.RpcError as error:
        return error.code(), error.details()  # type: ignore[attr-defined]


def assert_still_serving(target: Target) -> None:
    assert health_status(target.server.port) == 1  # SERVING
    log = target.server.output()
    assert "Traceback" not in log
    assert "unexpected error" not in log


@pytest.mark.parametrize("method", METHODS, ids=lambda method: method.full_name)
def test_hostile_requests_get_only_documented_codes(target, method):
    call = rpc(target.channel, method)
    seen: set[Code] = set()

    @settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(messages(method.input_type, target.known))
    def answers_with_a_documented_code(request) -> None:
        code, details = outcome(lambda: call(request, timeout=30))
        assert code in DOCUMENTED, f"{code}: {details} for {request!r}"
        seen.add(code)

    answers_with_a_documented_code()
    assert Code.INVALID_ARGUMENT in seen  # the input was hostile enough to be refused
    assert_still_serving(target)


def list_customers(target: Target, store_id: int, token: str):
    stub = customer_service_pb2_grpc.CustomerServiceStub(target.channel)
    return stub.ListCustomers(
        customer_service_pb2.ListCustomersRequest(store_id=store_id, page_size=1, page_token=token),
        timeout=30,
    )


def test_page_tokens_are_tamper_evident_and_bound_to_their_store(target):
    (original,) = target.customer_tokens
    expected = list_customers(target, target.store_id, original)

    @given(page_tokens([original]), st.booleans())
    def forged_tokens_read_nothing_else(token: str, other_store: bool) -> None:
        store_id = target.other_store_id if other_store else target.store_id
        code, page = outcome(lambda: list_customers(target, store_id, token))
        if code != Code.OK:
            assert code == Code.INVALID_ARGUMENT, page
            return
        if token == "":  # no token at all: the first page of the store asked
            assert {customer.store_id for customer in page.customers} <= {store_id}
            return
        # Accepted: it must be the genuine token (or decode to exactly it), in its store.
        assert store_id == target.store_id
        assert page == expected

    forged_tokens_read_nothing_else()
    assert_still_serving(target)


# -- tenant isolation ---------------------------------------------------------------------

NAMES = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), max_size=20)
NEW_CUSTOMERS = st.lists(
    st.tuples(NAMES, st.integers(0, 3), st.integers(0, 500)), min_size=1, max_size=4
)


class Stubs:
    def __init__(self, channel: grpc.Channel) -> None:
        self.customers = customer_service_pb2_grpc.CustomerServiceStub(channel)
        self.orders = order_service_pb2_grpc.OrderServiceStub(channel)
        self.history = customer_order_service_pb2_grpc.CustomerOrderServiceStub(channel)
        self.loyalty = customer_loyalty_service_pb2_grpc.CustomerLoyaltyServiceStub(channel)


def populate(stubs: Stubs, store_id: int, spec: list[tuple[str, int, int]]) -> list[int]:
    """Customers (named as drawn) with some orders and points each; their ids."""
    ids = []
    for name, order_count, points in spec:
        customer = stubs.customers.CreateCustomer(
            customer_service_pb2.CreateCustomerRequest(
                store_id=store_id, email=f"i{uuid.uuid4().hex[:10]}@example.com", first_name=name
            )
        ).customer
        for quantity in range(1, order_count + 1):
            stubs.orders.CreateOrder(
                order_service_pb2.CreateOrderRequest(
                    store_id=store_id,
                    customer_id=customer.customer_id,
                    currency_code="EUR",
                    line_items=[
                        order_pb2.OrderLineItem(
                            sku="S", name=name or "n", quantity=quantity, unit_price_minor=100
                        )
                    ],
                )
            )
        if points:
            stubs.loyalty.AddLoyaltyPoints(
                loyalty_pb.AddLoyaltyPointsRequest(
                    store_id=store_id, customer_id=customer.customer_id, points=points, reason="r"
                )
            )
        ids.append(customer.customer_id)
    return ids


def snapshot(stubs: Stubs, store_id: int, ids: list[int]) -> list[object]:
    """Everything store `store_id` shows about these customers, and its lists."""
    seen: list[object] = [
        stubs.customers.ListCustomers(
            customer_service_pb2.ListCustomersRequest(store_id=store_id, page_size=500)
        ),
        stubs.orders.ListOrders(
            order_service_pb2.ListOrdersRequest(store_id=store_id, page_size=500)
        ),
    ]
    for cid in ids:
        seen += [
            stubs.customers.GetCustomer(
                customer_service_pb2.GetCustomerRequest(store_id=store_id, customer_id=cid)
            ),
            stubs.history.GetCustomerOrderStats(
                customer_orders_pb.GetCustomerOrderStatsRequest(store_id=store_id, customer_id=cid)
            ),
            stubs.loyalty.GetCustomerLoyalty(
                loyalty_pb.GetCustomerLoyaltyRequest(store_id=store_id, customer_id=cid)
            ),
        ]
    return seen


def attacks(stubs: Stubs, store_id: int, cid: int, order_id: int) -> list[Callable[[], object]]:
    """Every RPC that names a customer or an order, aimed at them from `store_id`."""
    b = store_id
    return [
        lambda: stubs.customers.GetCustomer(
            customer_service_pb2.GetCustomerRequest(store_id=b, customer_id=cid)
        ),
        lambda: stubs.customers.UpdateCustomer(
            customer_service_pb2.UpdateCustomerRequest(
                store_id=b, customer_id=cid, customer=customer_pb2.Customer(first_name="pwned")
            )
        ),
        lambda: stubs.customers.SetCustomerStatus(
            customer_service_pb2.SetCustomerStatusRequest(
                store_id=b, customer_id=cid, status=customer_pb2.CUSTOMER_STATUS_INACTIVE
            )
        ),
        lambda: stubs.customers.ChangeCustomerPassword(
            customer_service_pb2.ChangeCustomerPasswordRequest(
                store_id=b, customer_id=cid, new_password="pwned-password"
            )
        ),
        lambda: stubs.customers.CreateCustomerAddress(
            customer_service_pb2.CreateCustomerAddressRequest(
                store_id=b,
                customer_id=cid,
                address=customer_pb2.CustomerAddress(
                    recipient_name="x", address_line1="x", city="x", country_code="DE"
                ),
            )
        ),
        lambda: stubs.customers.ListCustomerAddresses(
            customer_service_pb2.ListCustomerAddressesRequest(store_id=b, customer_id=cid)
        ),
        lambda: stubs.customers.GetCustomerMetrics(
            customer_service_pb2.GetCustomerMetricsRequest(store_id=b, customer_id=cid)
        ),
        lambda: stubs.orders.CreateOrder(
            order_service_pb2.CreateOrderRequest(
                store_id=b,
                customer_id=cid,
                currency_code="EUR",
                line_items=[
                    order_pb2.OrderLineItem(sku="S", name="n", quantity=1, unit_price_minor=1)
                ],
            )
        ),
        lambda: stubs.orders.GetOrder(
            order_service_pb2.GetOrderRequest(store_id=b, order_id=order_id)
        ),
        lambda: stubs.orders.UpdateOrderStatus(
            order_service_pb2.UpdateOrderStatusRequest(
                store_id=b, order_id=order_id, status=order_pb2.ORDER_STATUS_CANCELLED
            )
        ),
        lambda: stubs.history.ListCustomerOrders(
            customer_orders_pb.ListCustomerOrdersRequest(store_id=b, customer_id=cid)
        ),
        lambda: stubs.history.GetRecentCustomerOrders(
            customer_orders_pb.GetRecentCustomerOrdersRequest(store_id=b, customer_id=cid)
        ),
        lambda: stubs.history.GetCustomerOrderCount(
            customer_orders_pb.GetCustomerOrderCountRequest(store_id=b, customer_id=cid)
        ),
        lambda: stubs.history.GetCustomerOrderStats(
            customer_orders_pb.GetCustomerOrderStatsRequest(store_id=b, customer_id=cid)
        ),
        lambda: stubs.loyalty.GetCustomerLoyalty(
            loyalty_pb.GetCustomerLoyaltyRequest(store_id=b, customer_id=cid)
        ),
        lambda: stubs.loyalty.AddLoyaltyPoints(
            loyalty_pb.AddLoyaltyPointsRequest(store_id=b, customer_id=cid, points=5, reason="r")
        ),
        lambda: stubs.loyalty.RedeemLoyaltyPoints(
            loyalty_pb.RedeemLoyaltyPointsRequest(store_id=b, customer_id=cid, points=1, reason="r")
        ),
    ]


def store_ids(message: Message) -> set[int]:
    """Every store_id anywhere in a message."""
    found = set()
    for field, value in message.ListFields():
        if field.name == "store_id":
            found.add(value)
        elif field.type == field.TYPE_MESSAGE:
            for item in value if field.is_repeated else [value]:
                found |= store_ids(item)
    return found


def test_store_b_never_reads_counts_or_changes_store_a(target):
    stubs = Stubs(target.channel)
    a, b = target.store_id, target.other_store_id

    # Each example writes a few dozen rows and makes ~100 calls: a third of the examples.
    @settings(max_examples=max(10, settings.default.max_examples // 3))
    @given(NEW_CUSTOMERS, NEW_CUSTOMERS)
    def isolated(in_a: list[tuple[str, int, int]], in_b: list[tuple[str, int, int]]) -> None:
        a_ids = populate(stubs, a, in_a)
        populate(stubs, b, in_b)
        a_emails = {
            stubs.customers.GetCustomer(
                customer_service_pb2.GetCustomerRequest(store_id=a, customer_id=cid)
            ).customer.email
            for cid in a_ids
        }
        request = order_service_pb2.ListOrdersRequest(store_id=a, page_size=1)
        a_orders = stubs.orders.ListOrders(request).orders
        before = snapshot(stubs, a, a_ids)
        # Ids are numbered per store, so A's customer 5 and B's customer 5 are two
        # customers: B's calls may succeed, on B's own rows, never on A's.
        for cid in a_ids:
            order_id = a_orders[0].order_id if a_orders else 10**12
            for attack in attacks(stubs, b, cid, order_id):
                code, answer = outcome(attack)
                assert code in DOCUMENTED, (code, answer)
                if code == Code.OK:
                    assert store_ids(answer) <= {b}, answer
                    assert not any(email in str(answer) for email in a_emails), answer
        for listed in snapshot(stubs, b, [])[:2]:
            assert store_ids(listed) <= {b}
            assert not any(email in str(listed) for email in a_emails)
        assert snapshot(stubs, a, a_ids) == before

    isolated()
    assert_still_serving(target)
