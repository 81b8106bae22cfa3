"""A copy of one store's customers kept by another system (a search index, a CRM),
loaded once and then kept up to date from the change feed, depending on the stubs
only (the `commerce-protos` package), never on the server's code.

    pip install ./generated
    python clients/python/customer_mirror.py 127.0.0.1:50051 1    # --help

It loads every customer with CustomerService.ExportCustomers, which gives the
event cursor its snapshot is consistent at, then applies the store's customer
events after that cursor (EventService.ListEvents) until it has read them all: no
change is missed and none is applied twice. CustomerErased carries no data: the
erased customer is read again, with nothing personal left. It prints one JSON
line: the customers as the copy holds them, the cursor to go on from, and how
many events it applied.

With `--state FILE` the copy persists between runs: the first run loads and writes
the file; each later one reads it and only applies the events after its cursor.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import grpc
from commerce.customers.v1 import (
    customer_events_pb2,
    customer_pb2,
    customer_service_pb2,
    customer_service_pb2_grpc,
)
from commerce.events.v1 import event_service_pb2, event_service_pb2_grpc
from google.protobuf import json_format

DEADLINE_SECONDS = 30.0
PAGE_SIZE = 1000

# The customer events whose payload carries the customer as it is after the change.
WITH_CUSTOMER = (
    customer_events_pb2.CustomerCreated,
    customer_events_pb2.CustomerUpdated,
    customer_events_pb2.CustomerStatusChanged,
)
ERASED = customer_events_pb2.CustomerErased
TYPES = [kind.DESCRIPTOR.full_name for kind in (*WITH_CUSTOMER, ERASED)]


def load(channel: grpc.Channel, store_id: int) -> tuple[dict[int, customer_pb2.Customer], str]:
    """Every customer of the store as of one snapshot, and the snapshot's cursor."""
    customers: dict[int, customer_pb2.Customer] = {}
    cursor = ""
    stub = customer_service_pb2_grpc.CustomerServiceStub(channel)
    request = customer_service_pb2.ExportCustomersRequest(store_id=store_id)
    for response in stub.ExportCustomers(request, timeout=DEADLINE_SECONDS):
        cursor = response.event_cursor  # the same in every message
        for customer in response.customers:
            customers[customer.customer_id] = customer
    return customers, cursor


def catch_up(
    channel: grpc.Channel, store_id: int, customers: dict[int, customer_pb2.Customer], cursor: str
) -> tuple[str, int]:
    """Applies the customer events after `cursor`, oldest first, until none is left;
    the cursor of the last one read and how many were applied."""
    feed = event_service_pb2_grpc.EventServiceStub(channel)
    customers_stub = customer_service_pb2_grpc.CustomerServiceStub(channel)
    request = event_service_pb2.ListEventsRequest(
        store_id=store_id, after_cursor=cursor, types=TYPES, page_size=PAGE_SIZE
    )
    applied = 0
    while True:
        page = feed.ListEvents(request, timeout=DEADLINE_SECONDS)
        for event in page.events:
            customer_id = int(event.subject.split("/")[1])  # customers/{customer_id}
            if event.payload.Is(ERASED.DESCRIPTOR):
                # The event carries no personal data, nor the rest of the customer:
                # what is left of it is read again (an erasure is final, so this is
                # the customer as the event left it).
                left = customers_stub.GetCustomer(
                    customer_service_pb2.GetCustomerRequest(
                        store_id=store_id, customer_id=customer_id
                    ),
                    timeout=DEADLINE_SECONDS,
                )
                customers[customer_id] = left.customer
            else:
                for kind in WITH_CUSTOMER:
                    if event.payload.Is(kind.DESCRIPTOR):
                        changed = kind()
                        event.payload.Unpack(changed)
                        customers[customer_id] = changed.customer
            applied += 1
            cursor = event.cursor
        if not page.next_page_token:
            return cursor, applied
        request.page_token = page.next_page_token


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("address", help="the server, such as 127.0.0.1:50051")
    parser.add_argument("store_id", type=int)
    parser.add_argument("--state", type=Path, help="keep the copy in this JSON file")
    arguments = parser.parse_args(argv)
    state: Path | None = arguments.state
    with grpc.insecure_channel(arguments.address) as channel:
        if state is not None and state.exists():
            saved = json.loads(state.read_text())
            customers = {
                int(item["customerId"]): json_format.ParseDict(item, customer_pb2.Customer())
                for item in saved["customers"]
            }
            cursor, loaded = saved["cursor"], 0
        else:
            customers, cursor = load(channel, arguments.store_id)
            loaded = len(customers)
        cursor, applied = catch_up(channel, arguments.store_id, customers, cursor)
    copy = {
        "loaded": loaded,
        "applied": applied,
        "cursor": cursor,
        "customers": [
            json_format.MessageToDict(customers[customer_id]) for customer_id in sorted(customers)
        ],
    }
    if state is not None:
        state.write_text(json.dumps(copy))
    print(json.dumps(copy))
    return 0


if __name__ == "__main__":
    sys.exit(main())
