"""BatchGetCustomers (AIP-231): many customers in one call, in the order asked for,
all or nothing."""

from __future__ import annotations

import grpc
import pytest

from services.customers.rules import MAX_BATCH_CUSTOMERS
from tests.e2e.helpers import create_customer, pb
from tests.errors import rpc_error

Code = grpc.StatusCode


def batch(store_id: int, *customer_ids: int) -> pb.BatchGetCustomersRequest:
    return pb.BatchGetCustomersRequest(store_id=store_id, customer_ids=customer_ids)


async def test_customers_come_in_request_order_repeats_included(customers, store_id):
    ann, bob, cat = [await create_customer(customers, store_id) for _ in range(3)]
    ids = [cat.customer_id, ann.customer_id, cat.customer_id, bob.customer_id]
    response = await customers.BatchGetCustomers(batch(store_id, *ids))
    assert list(response.customers) == [cat, ann, cat, bob]


async def test_one_missing_customer_fails_the_whole_call_naming_the_first(customers, store_id):
    ann = await create_customer(customers, store_id)
    failure = await rpc_error(
        customers.BatchGetCustomers(batch(store_id, ann.customer_id, 9003, 9001, 9005, 9003)),
        Code.NOT_FOUND,
    )
    assert failure.error_info.reason == "CUSTOMER_NOT_FOUND"
    assert failure.resource_info.resource_type == "customer"
    assert failure.resource_info.resource_name == f"stores/{store_id}/customers/9003"


async def test_another_stores_customer_is_not_found(customers, store_id, other_store_id):
    ours = await create_customer(customers, store_id)
    # Ids count per store: the other store's third customer has an id this one lacks.
    *_, stranger = [await create_customer(customers, other_store_id) for _ in range(3)]
    failure = await rpc_error(
        customers.BatchGetCustomers(batch(store_id, ours.customer_id, stranger.customer_id)),
        Code.NOT_FOUND,
    )
    assert failure.resource_info.resource_name == (
        f"stores/{store_id}/customers/{stranger.customer_id}"
    )
    response = await customers.BatchGetCustomers(batch(other_store_id, stranger.customer_id))
    assert list(response.customers) == [stranger]


async def test_the_most_ids_a_call_takes(customers, store_id):
    ann = await create_customer(customers, store_id)
    response = await customers.BatchGetCustomers(
        batch(store_id, *[ann.customer_id] * MAX_BATCH_CUSTOMERS)
    )
    assert len(response.customers) == MAX_BATCH_CUSTOMERS
    assert {customer.customer_id for customer in response.customers} == {ann.customer_id}


@pytest.mark.parametrize(
    ("ids", "bad_fields"),
    [
        ([], {"customer_ids"}),
        ([1] * (MAX_BATCH_CUSTOMERS + 1), {"customer_ids"}),
        ([1, 0, 2, -3], {"customer_ids[1]", "customer_ids[3]"}),
    ],
)
async def test_bad_id_lists_are_invalid(customers, store_id, ids, bad_fields):
    failure = await rpc_error(
        customers.BatchGetCustomers(batch(store_id, *ids)), Code.INVALID_ARGUMENT
    )
    assert failure.violated_fields == bad_fields


async def test_unknown_store_is_not_found(customers):
    failure = await rpc_error(customers.BatchGetCustomers(batch(987654321, 1)), Code.NOT_FOUND)
    assert failure.resource_info.resource_name == "stores/987654321"
