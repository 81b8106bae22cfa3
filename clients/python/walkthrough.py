"""An internal Python caller of the commerce services that depends on the stubs
only: the `commerce-protos` package (generated/), never on the server's code.

    pip install ./generated          # protobuf, grpcio, googleapis-common-protos
    python clients/python/walkthrough.py 127.0.0.1:50051 1    # --help: the arguments

It creates a customer in the given store, places an order for it (retried with the
same request_id), reads the order with its embedded customer and the customer's
statistics, follows the store's change feed until the order's OrderCreated event
arrives (once, though the order was placed twice), and decodes the details of an
error. It prints one JSON line of what it
saw and exits 1 at the first check that fails.
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from collections.abc import Callable

import grpc
from commerce.client import connect_sync
from commerce.customers.v1 import customer_service_pb2, customer_service_pb2_grpc
from commerce.events.v1 import event_service_pb2, event_service_pb2_grpc
from commerce.orders.v1 import (
    customer_order_service_pb2,
    customer_order_service_pb2_grpc,
    order_events_pb2,
    order_pb2,
    order_service_pb2,
    order_service_pb2_grpc,
)
from google.rpc import error_details_pb2, status_pb2

DEADLINE_SECONDS = 10.0  # every call carries one; the server bounds its work by it


def failure(call: Callable[[], object]) -> grpc.RpcError:
    """The error a call fails with; AssertionError if it succeeds."""
    try:
        call()
    except grpc.RpcError as error:
        return error
    raise AssertionError("the call was expected to fail")


def rich_status(error: grpc.RpcError) -> status_pb2.Status:
    """The google.rpc.Status the server sends in the grpc-status-details-bin trailer."""
    for item in error.trailing_metadata() or ():
        if item.key == "grpc-status-details-bin":
            return status_pb2.Status.FromString(item.value)
    raise AssertionError("the error carries no google.rpc.Status")


def order_created_event(
    channel: grpc.Channel, store_id: int, order_id: int
) -> tuple[str, order_events_pb2.OrderCreated]:
    """Follows the store's feed of OrderCreated events, from its oldest, until the one
    of `order_id` arrives; its cursor (where a consumer would resume) and payload. An
    event may come a moment after its order committed: the stream waits for it."""
    events = event_service_pb2_grpc.EventServiceStub(channel)
    stream = events.StreamEvents(
        event_service_pb2.StreamEventsRequest(
            store_id=store_id, types=[order_events_pb2.OrderCreated.DESCRIPTOR.full_name]
        ),
        timeout=DEADLINE_SECONDS,
    )
    try:
        for response in stream:
            created = order_events_pb2.OrderCreated()
            assert response.event.payload.Unpack(created), response.event.type
            if created.order.order_id == order_id:
                assert response.event.subject == f"orders/{order_id}"
                assert response.event.sequence == 1, "an order's first event"
                return response.event.cursor, created
    finally:
        stream.cancel()  # a stream follows new events until its caller stops it
    raise AssertionError("the feed ended without the order's event")


def walk_through(channel: grpc.Channel, store_id: int) -> dict[str, object]:
    customers = customer_service_pb2_grpc.CustomerServiceStub(channel)
    orders = order_service_pb2_grpc.OrderServiceStub(channel)
    customer_orders = customer_order_service_pb2_grpc.CustomerOrderServiceStub(channel)

    email = f"python-{uuid.uuid4()}@example.com"
    customer = customers.CreateCustomer(
        customer_service_pb2.CreateCustomerRequest(
            store_id=store_id, email=email, password="correct horse", first_name="Py"
        ),
        timeout=DEADLINE_SECONDS,
    ).customer

    place = order_service_pb2.CreateOrderRequest(
        store_id=store_id,
        customer_id=customer.customer_id,
        currency_code="EUR",
        request_id=str(uuid.uuid4()),
        line_items=[
            order_pb2.OrderLineItem(sku="MUG-1", name="Mug", quantity=3, unit_price_minor=1299)
        ],
    )
    placed = orders.CreateOrder(place, timeout=DEADLINE_SECONDS).order
    retried = orders.CreateOrder(place, timeout=DEADLINE_SECONDS).order
    assert retried.order_id == placed.order_id, "a retried CreateOrder creates nothing new"
    assert placed.total_minor == 3 * 1299

    order = orders.GetOrder(
        order_service_pb2.GetOrderRequest(store_id=store_id, order_id=placed.order_id),
        timeout=DEADLINE_SECONDS,
    ).order
    assert order.customer.email == email, "GetOrder embeds the customer"
    assert order.status == order_pb2.ORDER_STATUS_PENDING

    stats = customer_orders.GetCustomerOrderStats(
        customer_order_service_pb2.GetCustomerOrderStatsRequest(
            store_id=store_id, customer_id=customer.customer_id
        ),
        timeout=DEADLINE_SECONDS,
    ).stats
    assert stats.total_orders == 1
    assert [(m.currency_code, m.amount_minor) for m in stats.total_spent] == [("EUR", 3897)]

    cursor, created = order_created_event(channel, store_id, placed.order_id)
    assert created.customer == customer.name, "an event names the customer"
    assert not created.order.HasField("customer"), "and embeds no copy of it"
    later = event_service_pb2_grpc.EventServiceStub(channel).ListEvents(
        event_service_pb2.ListEventsRequest(store_id=store_id, after_cursor=cursor),
        timeout=DEADLINE_SECONDS,
    )
    assert all(event.subject != f"orders/{placed.order_id}" for event in later.events), (
        "the retried CreateOrder made no second event"
    )

    duplicate = failure(
        lambda: customers.CreateCustomer(
            customer_service_pb2.CreateCustomerRequest(
                store_id=store_id, email=email, password="another one"
            ),
            timeout=DEADLINE_SECONDS,
        )
    )
    assert duplicate.code() == grpc.StatusCode.ALREADY_EXISTS
    info = error_details_pb2.ErrorInfo()
    assert rich_status(duplicate).details[0].Unpack(info)

    return {
        "customer_id": customer.customer_id,
        "order_id": placed.order_id,
        "create_time": order.create_time.ToJsonString(),
        "total_spent": stats.total_spent[0].amount_minor,
        "duplicate_reason": info.reason,
        "order_event_cursor": cursor,
    }


def arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Walk through the customers and orders RPCs against a running server "
        "(plaintext), printing one JSON line of what it saw.",
        epilog="example: python clients/python/walkthrough.py 127.0.0.1:50051 1",
    )
    parser.add_argument(
        "target",
        help="host:port of the server, e.g. 127.0.0.1:50051, or of its replicas, "
        "comma-separated (IP addresses), e.g. 10.0.0.1:50051,10.0.0.2:50051",
    )
    parser.add_argument(
        "store_id", type=int, help="an active store's id (`commerce stores create` prints it)"
    )
    return parser.parse_args(argv)


def main() -> None:
    args = arguments()
    # commerce.client's channel: round_robin over the replicas, retries where safe.
    with connect_sync(args.target.split(",")) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=DEADLINE_SECONDS)
        except grpc.FutureTimeoutError:
            sys.exit(f"error: no gRPC server answers at {args.target}")
        print(json.dumps(walk_through(channel, args.store_id)))


if __name__ == "__main__":
    main()
