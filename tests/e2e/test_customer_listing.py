"""ListCustomers: AIP-158 page sizes, keyset page tokens, filters and search."""

from __future__ import annotations

import asyncio
import base64

import grpc
import pytest
from commerce.customers.v1 import customer_pb2

from tests.e2e.helpers import create_customer, pb
from tests.errors import rpc_error

Code = grpc.StatusCode


async def walk(stub, request: pb.ListCustomersRequest, *, between_pages=None) -> list[int]:
    """Every customer id the pages return, in order, following next_page_token."""
    seen: list[int] = []
    for _ in range(1000):  # a token that never ends the walk fails instead of hanging
        response = await stub.ListCustomers(request)
        seen += [customer.customer_id for customer in response.customers]
        if not response.next_page_token:
            return seen
        if between_pages is not None:
            await between_pages()
        request.page_token = response.next_page_token
    raise AssertionError("the pages never ended")


async def test_walking_all_pages_returns_every_customer_once(customers, store_id):
    created = [await create_customer(customers, store_id) for _ in range(23)]
    seen = await walk(customers, pb.ListCustomersRequest(store_id=store_id, page_size=5))
    assert seen == [customer.customer_id for customer in created]


async def test_rows_inserted_while_paging_neither_repeat_nor_hide_old_rows(customers, store_id):
    original = [await create_customer(customers, store_id) for _ in range(12)]
    added: list[int] = []

    async def insert_two() -> None:
        for _ in range(2):
            added.append((await create_customer(customers, store_id)).customer_id)

    seen = await walk(
        customers, pb.ListCustomersRequest(store_id=store_id, page_size=4), between_pages=insert_two
    )
    assert len(seen) == len(set(seen))
    assert {c.customer_id for c in original} <= set(seen)
    assert set(seen) <= {c.customer_id for c in original} | set(added)


async def test_page_size_zero_means_fifty_and_large_is_capped(customers, store_id):
    await asyncio.gather(*(create_customer(customers, store_id) for _ in range(51)))
    default_page = await customers.ListCustomers(pb.ListCustomersRequest(store_id=store_id))
    assert len(default_page.customers) == 50
    assert default_page.next_page_token
    big_page = await customers.ListCustomers(
        pb.ListCustomersRequest(store_id=store_id, page_size=10_000)
    )
    assert len(big_page.customers) == 51
    assert big_page.next_page_token == ""


async def test_negative_page_size_is_invalid(customers, store_id):
    failure = await rpc_error(
        customers.ListCustomers(pb.ListCustomersRequest(store_id=store_id, page_size=-1)),
        Code.INVALID_ARGUMENT,
    )
    assert failure.violated_fields == {"page_size"}


async def test_filter_by_status(customers, store_id):
    active = await create_customer(customers, store_id)
    inactive = await create_customer(customers, store_id)
    await customers.SetCustomerStatus(
        pb.SetCustomerStatusRequest(
            store_id=store_id,
            customer_id=inactive.customer_id,
            status=customer_pb2.CUSTOMER_STATUS_INACTIVE,
        )
    )
    for status, expected in (
        (customer_pb2.CUSTOMER_STATUS_ACTIVE, [active.customer_id]),
        (customer_pb2.CUSTOMER_STATUS_INACTIVE, [inactive.customer_id]),
        (customer_pb2.CUSTOMER_STATUS_UNSPECIFIED, [active.customer_id, inactive.customer_id]),
    ):
        assert (
            await walk(customers, pb.ListCustomersRequest(store_id=store_id, status=status))
            == expected
        )


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("ZOE", ["zoe"]),  # first name, any case
        ("quintero", ["zoe"]),  # last name
        ("zoe quin", ["zoe"]),  # full name
        ("@shop.example.com", ["zoe", "yan"]),  # email
        ("555-01", ["yan"]),  # phone
        ("%", ["pct"]),  # LIKE wildcards are matched literally
        ("0% s", ["pct"]),
        ("_", []),
        ("/", []),  # the escape character itself
        ("nobody", []),
    ],
)
async def test_search_matches_email_names_and_phone(customers, store_id, query, expected):
    people = {
        "zoe": await create_customer(
            customers, store_id, email="z@shop.example.com", first_name="Zoe", last_name="Quintero"
        ),
        "yan": await create_customer(
            customers, store_id, email="yan@shop.example.com", phone="+1 555-0199"
        ),
        "pct": await create_customer(
            customers, store_id, email="p@other.example.org", last_name="100% Smith"
        ),
    }
    seen = await walk(
        customers, pb.ListCustomersRequest(store_id=store_id, query=query, page_size=1)
    )
    assert seen == [people[name].customer_id for name in expected]


async def test_a_token_only_works_with_its_own_filters_and_store(
    customers, store_id, other_store_id
):
    for _ in range(3):
        await create_customer(customers, store_id, first_name="Tok")
        await create_customer(customers, other_store_id, first_name="Tok")
    first = await customers.ListCustomers(
        pb.ListCustomersRequest(store_id=store_id, query="tok", page_size=1)
    )
    token = first.next_page_token
    assert token
    for request in (
        pb.ListCustomersRequest(store_id=store_id, query="other", page_token=token),
        pb.ListCustomersRequest(store_id=store_id, page_token=token),
        pb.ListCustomersRequest(
            store_id=store_id,
            query="tok",
            status=customer_pb2.CUSTOMER_STATUS_ACTIVE,
            page_token=token,
        ),
        pb.ListCustomersRequest(store_id=other_store_id, query="tok", page_token=token),
    ):
        failure = await rpc_error(customers.ListCustomers(request), Code.INVALID_ARGUMENT)
        assert failure.violated_fields == {"page_token"}
    # A different page size is allowed (AIP-158).
    second = await customers.ListCustomers(
        pb.ListCustomersRequest(store_id=store_id, query="tok", page_size=2, page_token=token)
    )
    assert len(second.customers) == 2


@pytest.mark.parametrize("mangle", ["garbage!", "", "flip"])
async def test_forged_or_damaged_tokens_are_invalid(customers, store_id, mangle):
    for _ in range(2):
        await create_customer(customers, store_id)
    token = (
        await customers.ListCustomers(pb.ListCustomersRequest(store_id=store_id, page_size=1))
    ).next_page_token
    if mangle == "flip":
        raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        raw[5] ^= 1
        forged = base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")
    elif mangle == "":
        forged = token[:-3]
    else:
        forged = mangle
    failure = await rpc_error(
        customers.ListCustomers(pb.ListCustomersRequest(store_id=store_id, page_token=forged)),
        Code.INVALID_ARGUMENT,
    )
    assert failure.violated_fields == {"page_token"}


async def test_overlong_query_is_invalid(customers, store_id):
    failure = await rpc_error(
        customers.ListCustomers(pb.ListCustomersRequest(store_id=store_id, query="q" * 256)),
        Code.INVALID_ARGUMENT,
    )
    assert failure.violated_fields == {"query"}
