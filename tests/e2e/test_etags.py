"""AIP-154 etags: a change based on a stale read is ABORTED and changes nothing."""

from __future__ import annotations

import asyncio

import grpc
from commerce.customers.v1 import customer_pb2
from google.protobuf import field_mask_pb2

from tests.e2e.helpers import PASSWORD, create_customer, pb
from tests.errors import rpc_error

Code = grpc.StatusCode


def rename(
    store_id: int, customer_id: int, first_name: str, etag: str = ""
) -> pb.UpdateCustomerRequest:
    return pb.UpdateCustomerRequest(
        store_id=store_id,
        customer_id=customer_id,
        customer=customer_pb2.Customer(first_name=first_name, etag=etag),
        update_mask=field_mask_pb2.FieldMask(paths=["first_name"]),
    )


async def test_every_change_gives_a_new_etag(customers, store_id):
    created = await create_customer(customers, store_id, password=PASSWORD)
    etags = [created.etag]
    renamed = (await customers.UpdateCustomer(rename(store_id, created.customer_id, "Al"))).customer
    etags.append(renamed.etag)
    status = pb.SetCustomerStatusRequest(
        store_id=store_id,
        customer_id=created.customer_id,
        status=customer_pb2.CUSTOMER_STATUS_INACTIVE,
    )
    etags.append((await customers.SetCustomerStatus(status)).customer.etag)
    password = pb.ChangeCustomerPasswordRequest(
        store_id=store_id,
        customer_id=created.customer_id,
        current_password=PASSWORD,
        new_password="new secret!",
    )
    etags.append((await customers.ChangeCustomerPassword(password)).customer.etag)
    assert all(etags)
    assert len(set(etags)) == 4
    got = await customers.GetCustomer(
        pb.GetCustomerRequest(store_id=store_id, customer_id=created.customer_id)
    )
    assert got.customer.etag == etags[-1]
    # Setting the status it already has changes nothing, so the etag stays.
    assert (await customers.SetCustomerStatus(status)).customer.etag == etags[-1]


async def test_a_stale_etag_is_aborted_and_changes_nothing(customers, store_id):
    created = await create_customer(customers, store_id, first_name="Old")
    current = (
        await customers.UpdateCustomer(rename(store_id, created.customer_id, "Newer", created.etag))
    ).customer
    failure = await rpc_error(
        customers.UpdateCustomer(rename(store_id, created.customer_id, "Stale", created.etag)),
        Code.ABORTED,
    )
    assert failure.error_info.reason == "ETAG_MISMATCH"
    await rpc_error(
        customers.SetCustomerStatus(
            pb.SetCustomerStatusRequest(
                store_id=store_id,
                customer_id=created.customer_id,
                status=customer_pb2.CUSTOMER_STATUS_INACTIVE,
                etag=created.etag,
            )
        ),
        Code.ABORTED,
    )
    got = await customers.GetCustomer(
        pb.GetCustomerRequest(store_id=store_id, customer_id=created.customer_id)
    )
    assert got.customer == current


async def test_concurrent_writers_with_one_etag_have_one_winner(customers, store_id):
    created = await create_customer(customers, store_id)
    calls = [
        customers.UpdateCustomer(rename(store_id, created.customer_id, f"W{i}", created.etag))
        for i in range(8)
    ]
    results = await asyncio.gather(*calls, return_exceptions=True)
    winners = [r for r in results if not isinstance(r, Exception)]
    assert len(winners) == 1
    assert {r.code() for r in results if isinstance(r, grpc.aio.AioRpcError)} == {Code.ABORTED}
    got = await customers.GetCustomer(
        pb.GetCustomerRequest(store_id=store_id, customer_id=created.customer_id)
    )
    assert got.customer.first_name == winners[0].customer.first_name
