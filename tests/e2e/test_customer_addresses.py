"""Customer addresses: create, update, delete, list, single defaults, the limit."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from commerce.customers.v1 import customer_pb2
from google.protobuf import field_mask_pb2

from services.customers.rules import MAX_ADDRESSES_PER_CUSTOMER
from tests.e2e.helpers import create_customer, pb
from tests.errors import rpc_error

Code = grpc.StatusCode


def address(**fields) -> customer_pb2.CustomerAddress:
    base = {
        "recipient_name": "Ann Smith",
        "address_line1": "Main St 1",
        "city": "Berlin",
        "country_code": "de",
    }
    return customer_pb2.CustomerAddress(**(base | fields))


async def add(stub, store_id, customer_id, **fields) -> customer_pb2.CustomerAddress:
    request = pb.CreateCustomerAddressRequest(
        store_id=store_id, customer_id=customer_id, address=address(**fields)
    )
    return (await stub.CreateCustomerAddress(request)).address


async def listed(stub, store_id, customer_id) -> list[customer_pb2.CustomerAddress]:
    request = pb.ListCustomerAddressesRequest(store_id=store_id, customer_id=customer_id)
    return list((await stub.ListCustomerAddresses(request)).addresses)


@pytest.fixture
async def customer(customers, store_id) -> customer_pb2.Customer:
    return await create_customer(customers, store_id)


async def test_create_and_list_addresses(customers, store_id, customer):
    first = await add(
        customers,
        store_id,
        customer.customer_id,
        postal_code="10115",
        region="BE",
        phone="+49 30 1",
    )
    second = await add(
        customers, store_id, customer.customer_id, city="Hamburg", address_line2="3rd floor"
    )
    assert first.country_code == "DE"
    assert (first.store_id, first.customer_id) == (store_id, customer.customer_id)
    assert first.create_time.seconds > 0
    assert await listed(customers, store_id, customer.customer_id) == [first, second]


async def test_missing_and_bad_fields_are_named(customers, store_id, customer):
    request = pb.CreateCustomerAddressRequest(
        store_id=store_id,
        customer_id=customer.customer_id,
        address=customer_pb2.CustomerAddress(country_code="XX", postal_code="9" * 21),
    )
    failure = await rpc_error(customers.CreateCustomerAddress(request), Code.INVALID_ARGUMENT)
    assert failure.violated_fields == {
        "address.recipient_name",
        "address.address_line1",
        "address.city",
        "address.country_code",
        "address.postal_code",
    }
    assert await listed(customers, store_id, customer.customer_id) == []


async def test_one_default_shipping_and_one_default_billing(customers, store_id, customer):
    cid = customer.customer_id
    home = await add(customers, store_id, cid, default_shipping=True, default_billing=True)
    office = await add(customers, store_id, cid, default_shipping=True)
    by_id = {a.address_id: a for a in await listed(customers, store_id, cid)}
    assert (by_id[home.address_id].default_shipping, by_id[home.address_id].default_billing) == (
        False,
        True,
    )
    assert by_id[office.address_id].default_shipping is True

    await customers.UpdateCustomerAddress(
        pb.UpdateCustomerAddressRequest(
            store_id=store_id,
            customer_id=cid,
            address_id=office.address_id,
            address=customer_pb2.CustomerAddress(default_billing=True),
            update_mask=field_mask_pb2.FieldMask(paths=["default_billing"]),
        )
    )
    by_id = {a.address_id: a for a in await listed(customers, store_id, cid)}
    assert by_id[home.address_id].default_billing is False
    assert by_id[office.address_id].default_billing is True


async def test_update_address_fields(customers, store_id, customer):
    created = await add(customers, store_id, customer.customer_id)
    response = await customers.UpdateCustomerAddress(
        pb.UpdateCustomerAddressRequest(
            store_id=store_id,
            customer_id=customer.customer_id,
            address_id=created.address_id,
            address=customer_pb2.CustomerAddress(city="Munich", country_code="fr"),
            update_mask=field_mask_pb2.FieldMask(paths=["city"]),
        )
    )
    assert (response.address.city, response.address.country_code) == ("Munich", "DE")


@pytest.mark.parametrize(
    ("paths", "fields", "bad_field"),
    [
        (["address_id"], {}, "update_mask"),
        (["city"], {"city": ""}, "address.city"),
        (["country_code"], {"country_code": "Germany"}, "address.country_code"),
    ],
)
async def test_update_address_rejects_bad_changes(
    customers, store_id, customer, paths, fields, bad_field
):
    created = await add(customers, store_id, customer.customer_id)
    failure = await rpc_error(
        customers.UpdateCustomerAddress(
            pb.UpdateCustomerAddressRequest(
                store_id=store_id,
                customer_id=customer.customer_id,
                address_id=created.address_id,
                address=customer_pb2.CustomerAddress(**fields),
                update_mask=field_mask_pb2.FieldMask(paths=paths),
            )
        ),
        Code.INVALID_ARGUMENT,
    )
    assert failure.violated_fields == {bad_field}
    assert await listed(customers, store_id, customer.customer_id) == [created]


async def test_delete_address(customers, store_id, customer):
    kept = await add(customers, store_id, customer.customer_id)
    gone = await add(customers, store_id, customer.customer_id)
    request = pb.DeleteCustomerAddressRequest(
        store_id=store_id, customer_id=customer.customer_id, address_id=gone.address_id
    )
    await customers.DeleteCustomerAddress(request)
    assert await listed(customers, store_id, customer.customer_id) == [kept]
    await rpc_error(customers.DeleteCustomerAddress(request), Code.NOT_FOUND)


async def test_another_customers_address_is_not_found(customers, store_id, customer):
    other = await create_customer(customers, store_id)
    theirs = await add(customers, store_id, other.customer_id)
    await rpc_error(
        customers.DeleteCustomerAddress(
            pb.DeleteCustomerAddressRequest(
                store_id=store_id, customer_id=customer.customer_id, address_id=theirs.address_id
            )
        ),
        Code.NOT_FOUND,
    )
    await rpc_error(
        customers.UpdateCustomerAddress(
            pb.UpdateCustomerAddressRequest(
                store_id=store_id,
                customer_id=customer.customer_id,
                address_id=theirs.address_id,
                address=customer_pb2.CustomerAddress(city="X"),
                update_mask=field_mask_pb2.FieldMask(paths=["city"]),
            )
        ),
        Code.NOT_FOUND,
    )
    assert await listed(customers, store_id, other.customer_id) == [theirs]


async def test_address_limit_is_failed_precondition(customers, store_id, customer):
    for _ in range(MAX_ADDRESSES_PER_CUSTOMER):
        await add(customers, store_id, customer.customer_id)
    failure = await rpc_error(
        customers.CreateCustomerAddress(
            pb.CreateCustomerAddressRequest(
                store_id=store_id, customer_id=customer.customer_id, address=address()
            )
        ),
        Code.FAILED_PRECONDITION,
    )
    assert failure.error_info.reason == "ADDRESS_LIMIT_REACHED"
    assert (
        len(await listed(customers, store_id, customer.customer_id)) == MAX_ADDRESSES_PER_CUSTOMER
    )


async def test_addresses_of_unknown_customer_are_not_found(customers, store_id):
    await rpc_error(
        customers.ListCustomerAddresses(
            pb.ListCustomerAddressesRequest(store_id=store_id, customer_id=31337)
        ),
        Code.NOT_FOUND,
    )
    await rpc_error(
        customers.CreateCustomerAddress(
            pb.CreateCustomerAddressRequest(store_id=store_id, customer_id=31337, address=address())
        ),
        Code.NOT_FOUND,
    )


# -- names and etags ------------------------------------------------------------------------


def change_city(
    store_id, customer_id, address_id, city, etag=""
) -> pb.UpdateCustomerAddressRequest:
    return pb.UpdateCustomerAddressRequest(
        store_id=store_id,
        customer_id=customer_id,
        address_id=address_id,
        address=customer_pb2.CustomerAddress(city=city, etag=etag),
        update_mask=field_mask_pb2.FieldMask(paths=["city"]),
    )


async def test_an_address_has_its_canonical_name(customers, store_id, customer):
    created = await add(customers, store_id, customer.customer_id)
    assert created.name == (
        f"stores/{store_id}/customers/{customer.customer_id}/addresses/{created.address_id}"
    )
    assert customer.name == f"stores/{store_id}/customers/{customer.customer_id}"


async def test_every_change_gives_an_address_a_new_etag(customers, store_id, customer):
    cid = customer.customer_id
    home = await add(customers, store_id, cid, default_shipping=True)
    moved = (
        await customers.UpdateCustomerAddress(
            change_city(store_id, cid, home.address_id, "Bonn", home.etag)
        )
    ).address
    assert moved.etag
    assert moved.etag != home.etag
    # Taking the default from it is a change of it too.
    await add(customers, store_id, cid, default_shipping=True)
    (listed_home, _) = await listed(customers, store_id, cid)
    assert not listed_home.default_shipping
    assert listed_home.etag not in (home.etag, moved.etag)


async def test_a_stale_address_etag_is_aborted_and_changes_nothing(customers, store_id, customer):
    cid = customer.customer_id
    created = await add(customers, store_id, cid)
    current = (
        await customers.UpdateCustomerAddress(
            change_city(store_id, cid, created.address_id, "Bonn", created.etag)
        )
    ).address
    failure = await rpc_error(
        customers.UpdateCustomerAddress(
            change_city(store_id, cid, created.address_id, "Stale", created.etag)
        ),
        Code.ABORTED,
    )
    assert failure.error_info.reason == "ETAG_MISMATCH"
    assert failure.error_info.metadata["current_etag"] == current.etag
    failure = await rpc_error(
        customers.DeleteCustomerAddress(
            pb.DeleteCustomerAddressRequest(
                store_id=store_id, customer_id=cid, address_id=created.address_id, etag=created.etag
            )
        ),
        Code.ABORTED,
    )
    assert failure.error_info.reason == "ETAG_MISMATCH"
    assert failure.error_info.metadata["current_etag"] == current.etag
    assert await listed(customers, store_id, cid) == [current]


async def test_a_fresh_address_etag_updates_and_deletes(customers, store_id, customer):
    cid = customer.customer_id
    created = await add(customers, store_id, cid)
    updated = (
        await customers.UpdateCustomerAddress(
            change_city(store_id, cid, created.address_id, "Bonn", created.etag)
        )
    ).address
    assert updated.city == "Bonn"
    await customers.DeleteCustomerAddress(
        pb.DeleteCustomerAddressRequest(
            store_id=store_id, customer_id=cid, address_id=created.address_id, etag=updated.etag
        )
    )
    assert await listed(customers, store_id, cid) == []
    # An etag does not turn a missing address into anything but NOT_FOUND.
    failure = await rpc_error(
        customers.DeleteCustomerAddress(
            pb.DeleteCustomerAddressRequest(
                store_id=store_id, customer_id=cid, address_id=created.address_id, etag=updated.etag
            )
        ),
        Code.NOT_FOUND,
    )
    assert failure.resource_info.resource_name == (
        f"stores/{store_id}/customers/{cid}/addresses/{created.address_id}"
    )


async def test_etag_is_no_path_of_the_update_mask(customers, store_id, customer):
    created = await add(customers, store_id, customer.customer_id)
    request = change_city(store_id, customer.customer_id, created.address_id, "Bonn")
    request.update_mask.paths.append("etag")
    failure = await rpc_error(customers.UpdateCustomerAddress(request), Code.INVALID_ARGUMENT)
    assert failure.violated_fields == {"update_mask"}


# -- pages ----------------------------------------------------------------------------------


def page_request(store_id, customer_id, page_size=0, page_token=""):
    return pb.ListCustomerAddressesRequest(
        store_id=store_id, customer_id=customer_id, page_size=page_size, page_token=page_token
    )


async def test_addresses_come_in_pages_oldest_first(customers, store_id, customer):
    cid = customer.customer_id
    created = [await add(customers, store_id, cid, city=f"City {i}") for i in range(5)]
    seen, token, pages = [], "", 0
    while True:
        response = await customers.ListCustomerAddresses(page_request(store_id, cid, 2, token))
        seen += response.addresses
        pages += 1
        token = response.next_page_token
        if not token:
            break
    assert seen == created
    assert pages == 3
    # Without a page size, one page holds every address a customer can have.
    for _ in range(MAX_ADDRESSES_PER_CUSTOMER - len(created)):
        created.append(await add(customers, store_id, cid))
    everything = await customers.ListCustomerAddresses(page_request(store_id, cid))
    assert list(everything.addresses) == created
    assert everything.next_page_token == ""


async def test_an_address_page_token_is_bound_to_its_customer(customers, store_id, customer):
    other = await create_customer(customers, store_id)
    for owner in (customer, other):
        for _ in range(2):
            await add(customers, store_id, owner.customer_id)
    first = await customers.ListCustomerAddresses(page_request(store_id, customer.customer_id, 1))
    assert first.next_page_token
    failure = await rpc_error(
        customers.ListCustomerAddresses(
            page_request(store_id, other.customer_id, 1, first.next_page_token)
        ),
        Code.INVALID_ARGUMENT,
    )
    assert failure.violated_fields == {"page_token"}


@pytest.mark.parametrize(("page_size", "expected"), [(150, 20), (-1, None)])
async def test_address_page_sizes(customers, store_id, customer, page_size, expected):
    """Above the maximum is lowered to it (all 20 fit); negative is invalid."""
    for _ in range(MAX_ADDRESSES_PER_CUSTOMER):
        await add(customers, store_id, customer.customer_id)
    request = page_request(store_id, customer.customer_id, page_size)
    if expected is None:
        failure = await rpc_error(customers.ListCustomerAddresses(request), Code.INVALID_ARGUMENT)
        assert failure.violated_fields == {"page_size"}
        return
    response = await customers.ListCustomerAddresses(request)
    assert len(response.addresses) == expected
    assert response.next_page_token == ""


async def test_concurrent_address_writers_with_one_etag_have_one_winner(
    customers, store_id, customer
):
    cid = customer.customer_id
    created = await add(customers, store_id, cid)
    calls = [
        customers.UpdateCustomerAddress(
            change_city(store_id, cid, created.address_id, f"City {i}", created.etag)
        )
        for i in range(6)
    ]
    calls.append(
        customers.DeleteCustomerAddress(
            pb.DeleteCustomerAddressRequest(
                store_id=store_id, customer_id=cid, address_id=created.address_id, etag=created.etag
            )
        )
    )
    results = await asyncio.gather(*calls, return_exceptions=True)
    winners = [r for r in results if not isinstance(r, Exception)]
    assert len(winners) == 1
    losers = {r.code() for r in results if isinstance(r, grpc.aio.AioRpcError)}
    remaining = await listed(customers, store_id, cid)
    if isinstance(winners[0], pb.DeleteCustomerAddressResponse):
        # The updates that come after the delete find no address at all.
        assert losers == {Code.NOT_FOUND}
        assert remaining == []
    else:
        assert losers == {Code.ABORTED}
        assert remaining == [winners[0].address]
