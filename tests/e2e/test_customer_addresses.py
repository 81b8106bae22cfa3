"""Customer addresses: create, update, delete, list, single defaults, the limit."""

from __future__ import annotations

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
