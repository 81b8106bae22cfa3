"""One store never sees, counts or changes another store's customers or addresses."""

from __future__ import annotations

import grpc
from commerce.customers.v1 import customer_pb2
from google.protobuf import field_mask_pb2

from tests.e2e.helpers import PASSWORD, create_customer, pb
from tests.errors import rpc_error

Code = grpc.StatusCode


async def test_every_rpc_of_store_b_misses_store_a(customers, store_id, other_store_id):
    a, b = store_id, other_store_id
    victim = await create_customer(
        customers, a, email="victim@example.com", password=PASSWORD, first_name="Vic"
    )
    address = (
        await customers.CreateCustomerAddress(
            pb.CreateCustomerAddressRequest(
                store_id=a,
                customer_id=victim.customer_id,
                address=customer_pb2.CustomerAddress(
                    recipient_name="Vic", address_line1="1 Road", city="Oslo", country_code="NO"
                ),
            )
        )
    ).address
    cid, aid = victim.customer_id, address.address_id
    mask = field_mask_pb2.FieldMask

    not_found_calls = [
        customers.GetCustomer(pb.GetCustomerRequest(store_id=b, customer_id=cid)),
        customers.UpdateCustomer(
            pb.UpdateCustomerRequest(
                store_id=b,
                customer_id=cid,
                customer=customer_pb2.Customer(first_name="Mallory"),
                update_mask=mask(paths=["first_name"]),
            )
        ),
        customers.SetCustomerStatus(
            pb.SetCustomerStatusRequest(
                store_id=b, customer_id=cid, status=customer_pb2.CUSTOMER_STATUS_INACTIVE
            )
        ),
        customers.ChangeCustomerPassword(
            pb.ChangeCustomerPasswordRequest(
                store_id=b, customer_id=cid, current_password=PASSWORD, new_password="hijacked!!"
            )
        ),
        customers.ListCustomerAddresses(
            pb.ListCustomerAddressesRequest(store_id=b, customer_id=cid)
        ),
        customers.CreateCustomerAddress(
            pb.CreateCustomerAddressRequest(
                store_id=b,
                customer_id=cid,
                address=customer_pb2.CustomerAddress(
                    recipient_name="M", address_line1="2 Road", city="Oslo", country_code="NO"
                ),
            )
        ),
        customers.UpdateCustomerAddress(
            pb.UpdateCustomerAddressRequest(
                store_id=b,
                customer_id=cid,
                address_id=aid,
                address=customer_pb2.CustomerAddress(city="Bergen"),
                update_mask=mask(paths=["city"]),
            )
        ),
        customers.DeleteCustomerAddress(
            pb.DeleteCustomerAddressRequest(store_id=b, customer_id=cid, address_id=aid)
        ),
    ]
    for call in not_found_calls:
        await rpc_error(call, Code.NOT_FOUND)

    await rpc_error(
        customers.AuthenticateCustomer(
            pb.AuthenticateCustomerRequest(store_id=b, email=victim.email, password=PASSWORD)
        ),
        Code.UNAUTHENTICATED,
    )
    listing = await customers.ListCustomers(pb.ListCustomersRequest(store_id=b, query="vic"))
    assert list(listing.customers) == []

    # Store A's data is exactly as it was.
    assert (
        await customers.GetCustomer(pb.GetCustomerRequest(store_id=a, customer_id=cid))
    ).customer == victim
    addresses = await customers.ListCustomerAddresses(
        pb.ListCustomerAddressesRequest(store_id=a, customer_id=cid)
    )
    assert list(addresses.addresses) == [address]
    await customers.AuthenticateCustomer(
        pb.AuthenticateCustomerRequest(store_id=a, email=victim.email, password=PASSWORD)
    )


async def test_numbers_are_per_store(customers, store_id, other_store_id):
    in_a = await create_customer(customers, store_id)
    in_b = await create_customer(customers, other_store_id)
    assert (
        (in_a.customer_id, in_a.customer_number)
        == (in_b.customer_id, in_b.customer_number)
        == (1, "C-000001")
    )
    listing_b = await customers.ListCustomers(pb.ListCustomersRequest(store_id=other_store_id))
    assert [c.email for c in listing_b.customers] == [in_b.email]
