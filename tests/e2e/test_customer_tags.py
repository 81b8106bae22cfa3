"""Customer tags through the real server and stubs: CreateCustomer's and
UpdateCustomer's tags, AddCustomerTags and RemoveCustomerTags with their errors as
statuses and details, ListCustomers' tag filter, and stores kept apart."""

from __future__ import annotations

import grpc
import pytest
from commerce.customers.v1 import customer_pb2
from google.protobuf import field_mask_pb2

from tests.e2e.helpers import create_customer, pb
from tests.errors import rpc_error

MAX_TAGS = 50


async def add(customers, store_id, customer_id, *tags, etag=""):
    response = await customers.AddCustomerTags(
        pb.AddCustomerTagsRequest(
            store_id=store_id, customer_id=customer_id, tags=list(tags), etag=etag
        )
    )
    return response.customer


async def remove(customers, store_id, customer_id, *tags, etag=""):
    response = await customers.RemoveCustomerTags(
        pb.RemoveCustomerTagsRequest(
            store_id=store_id, customer_id=customer_id, tags=list(tags), etag=etag
        )
    )
    return response.customer


async def update(customers, store_id, customer_id, paths, **fields):
    response = await customers.UpdateCustomer(
        pb.UpdateCustomerRequest(
            store_id=store_id,
            customer_id=customer_id,
            customer=customer_pb2.Customer(**fields),
            update_mask=field_mask_pb2.FieldMask(paths=paths),
        )
    )
    return response.customer


async def listed(customers, store_id, page_size=2, **filters):
    """Every customer id of a filtered list, page by page."""
    ids, token = [], ""
    while True:
        page = await customers.ListCustomers(
            pb.ListCustomersRequest(
                store_id=store_id, page_size=page_size, page_token=token, **filters
            )
        )
        assert len(page.customers) <= page_size
        ids += [customer.customer_id for customer in page.customers]
        if not (token := page.next_page_token):
            return ids


async def test_tags_are_stored_normalised_and_read_back(customers, store_id):
    created = await create_customer(
        customers, store_id, tags=["  Big\u00a0 Spender", "VIP", "vip", "Stra\u00dfe"]
    )
    assert list(created.tags) == ["big spender", "strasse", "vip"]
    read = await customers.GetCustomer(
        pb.GetCustomerRequest(store_id=store_id, customer_id=created.customer_id)
    )
    assert read.customer.tags == created.tags


async def test_bad_tags_are_invalid_arguments_naming_each(customers, store_id):
    failure = await rpc_error(
        create_customer(customers, store_id, tags=["ok", "a,b", "x" * 65]),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert failure.violated_fields == {"tags[1]", "tags[2]"}
    customer = await create_customer(customers, store_id)
    for call in (add, remove):
        failure = await rpc_error(
            call(customers, store_id, customer.customer_id, "fine", "tab\there"),
            grpc.StatusCode.INVALID_ARGUMENT,
        )
        assert failure.violated_fields == {"tags[1]"}
        failure = await rpc_error(
            call(customers, store_id, customer.customer_id), grpc.StatusCode.INVALID_ARGUMENT
        )
        assert failure.violated_fields == {"tags"}
    failure = await rpc_error(
        update(customers, store_id, customer.customer_id, ["tags"], tags=[" "]),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert failure.violated_fields == {"customer.tags[0]"}
    failure = await rpc_error(
        update(
            customers, store_id, customer.customer_id, ["tags"], tags=[str(i) for i in range(51)]
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert failure.violated_fields == {"customer.tags"}


async def test_add_and_remove_change_the_set_and_its_etag(customers, store_id):
    customer = await create_customer(customers, store_id, tags=["b"])
    added = await add(customers, store_id, customer.customer_id, "A", "b", etag=customer.etag)
    assert list(added.tags) == ["a", "b"]
    assert added.etag != customer.etag
    # Nothing to add: the customer as it is, same etag.
    assert await add(customers, store_id, customer.customer_id, "a") == added
    removed = await remove(customers, store_id, customer.customer_id, "B", "nope")
    assert list(removed.tags) == ["a"]
    assert await remove(customers, store_id, customer.customer_id, "b") == removed

    failure = await rpc_error(
        add(customers, store_id, customer.customer_id, "c", etag=customer.etag),
        grpc.StatusCode.ABORTED,
    )
    assert failure.error_info.reason == "ETAG_MISMATCH"


async def test_more_than_fifty_tags_in_all_is_a_failed_precondition(customers, store_id):
    customer = await create_customer(customers, store_id, tags=[f"t{i}" for i in range(MAX_TAGS)])
    failure = await rpc_error(
        add(customers, store_id, customer.customer_id, "t0", "one more"),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert failure.error_info.reason == "TOO_MANY_TAGS"
    assert failure.error_info.metadata["max_tags"] == "50"
    read = await customers.GetCustomer(
        pb.GetCustomerRequest(store_id=store_id, customer_id=customer.customer_id)
    )
    assert read.customer == customer


async def test_update_mask_semantics_of_tags(customers, store_id):
    """`tags` in the mask replaces the set (empty: none); `*` writes every field,
    tags too; an empty mask writes the tags only when some are sent."""
    customer = await create_customer(customers, store_id, tags=["a", "b"], first_name="Ann")
    cid = customer.customer_id
    replaced = await update(customers, store_id, cid, ["tags"], tags=["C", "b"], first_name="x")
    assert (list(replaced.tags), replaced.first_name) == (["b", "c"], "Ann")
    kept = await update(customers, store_id, cid, [], first_name="Bea")
    assert (list(kept.tags), kept.first_name) == (["b", "c"], "Bea")
    set_by_empty_mask = await update(customers, store_id, cid, [], tags=["d"])
    assert list(set_by_empty_mask.tags) == ["d"]
    everything = await update(customers, store_id, cid, ["*"], email=customer.email)
    assert (list(everything.tags), everything.first_name) == ([], "")
    assert await listed(customers, store_id, tag="d") == []


async def test_the_tag_filter_pages_and_combines_with_status_and_query(
    customers, store_id, other_store_id
):
    ids = []
    for index in range(7):
        tags = ["vip"] if index % 2 == 0 else ["other"]
        customer = await create_customer(
            customers, store_id, tags=tags, last_name="Smith" if index < 4 else "Jones"
        )
        ids.append(customer.customer_id)
    await customers.SetCustomerStatus(
        pb.SetCustomerStatusRequest(
            store_id=store_id, customer_id=ids[2], status=customer_pb2.CUSTOMER_STATUS_INACTIVE
        )
    )
    theirs = await create_customer(customers, other_store_id, tags=["vip"])

    assert await listed(customers, store_id, tag="VIP") == [ids[0], ids[2], ids[4], ids[6]]
    assert await listed(customers, store_id, tag="vip", page_size=1) == [
        ids[0],
        ids[2],
        ids[4],
        ids[6],
    ]
    active = customer_pb2.CUSTOMER_STATUS_ACTIVE
    assert await listed(customers, store_id, tag="vip", status=active) == [ids[0], ids[4], ids[6]]
    assert await listed(customers, store_id, tag="vip", query="smith") == [ids[0], ids[2]]
    assert await listed(customers, store_id, tag="vip", query="smith", status=active) == [ids[0]]
    assert await listed(customers, other_store_id, tag="vip") == [theirs.customer_id]

    page = await customers.ListCustomers(
        pb.ListCustomersRequest(store_id=store_id, page_size=1, tag="vip")
    )
    failure = await rpc_error(
        customers.ListCustomers(
            pb.ListCustomersRequest(
                store_id=store_id, page_size=1, tag="other", page_token=page.next_page_token
            )
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert failure.violated_fields == {"page_token"}
    failure = await rpc_error(
        customers.ListCustomers(pb.ListCustomersRequest(store_id=store_id, tag="a,b")),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert failure.violated_fields == {"tag"}


@pytest.mark.parametrize("call", [add, remove])
async def test_another_stores_customer_is_not_found(customers, store_id, other_store_id, call):
    theirs = await create_customer(customers, other_store_id, tags=["a"])
    failure = await rpc_error(
        call(customers, store_id, theirs.customer_id, "a", "b"), grpc.StatusCode.NOT_FOUND
    )
    assert failure.resource_info.resource_name == (
        f"stores/{store_id}/customers/{theirs.customer_id}"
    )
    read = await customers.GetCustomer(
        pb.GetCustomerRequest(store_id=other_store_id, customer_id=theirs.customer_id)
    )
    assert list(read.customer.tags) == ["a"]
