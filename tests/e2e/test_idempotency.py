"""AIP-155 request_id: a retried create returns the first result and creates nothing."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import grpc
from commerce.customers.v1 import customer_pb2
from commerce.orders.v1 import order_service_pb2
from sqlalchemy import func, select, update

from services.core.db.engine import utc_now
from services.core.db.idempotency import IdempotencyKey
from services.server import Application
from tests.e2e.helpers import line, pb, unique_email
from tests.e2e.test_customers import count_customers
from tests.errors import rpc_error

Code = grpc.StatusCode


def create(store_id: int, email: str, request_id: str, **fields) -> pb.CreateCustomerRequest:
    return pb.CreateCustomerRequest(store_id=store_id, email=email, request_id=request_id, **fields)


async def test_a_retried_create_returns_the_first_customer(customers, store_id, sessions):
    request = create(store_id, unique_email(), str(uuid.uuid4()), password="correct horse")
    first = await customers.CreateCustomer(request)
    again = await customers.CreateCustomer(request)
    assert again.customer == first.customer
    assert await count_customers(sessions, store_id) == 1


async def test_a_request_id_is_matched_in_any_uuid_spelling(customers, store_id):
    request_id = uuid.uuid4()
    email = unique_email()
    first = await customers.CreateCustomer(create(store_id, email, str(request_id)))
    again = await customers.CreateCustomer(create(store_id, email, str(request_id).upper()))
    assert again.customer.customer_id == first.customer.customer_id


async def test_concurrent_retries_create_one_customer(customers, store_id, sessions):
    request = create(store_id, unique_email(), str(uuid.uuid4()))
    responses = await asyncio.gather(*(customers.CreateCustomer(request) for _ in range(10)))
    assert {response.customer.customer_id for response in responses} == {
        responses[0].customer.customer_id
    }
    assert await count_customers(sessions, store_id) == 1


async def test_reusing_a_request_id_for_another_request_is_invalid(customers, store_id):
    request_id = str(uuid.uuid4())
    await customers.CreateCustomer(create(store_id, unique_email(), request_id))
    failure = await rpc_error(
        customers.CreateCustomer(create(store_id, unique_email(), request_id)),
        Code.INVALID_ARGUMENT,
    )
    assert failure.violated_fields == {"request_id"}


async def test_a_request_id_must_be_a_uuid(customers, store_id):
    failure = await rpc_error(
        customers.CreateCustomer(create(store_id, unique_email(), "retry-1")), Code.INVALID_ARGUMENT
    )
    assert failure.violated_fields == {"request_id"}


async def test_request_ids_are_per_store(customers, store_id, other_store_id):
    request_id = str(uuid.uuid4())
    in_a = await customers.CreateCustomer(create(store_id, "same@example.com", request_id))
    in_b = await customers.CreateCustomer(create(other_store_id, "same@example.com", request_id))
    assert (in_a.customer.store_id, in_b.customer.store_id) == (store_id, other_store_id)


async def test_a_retried_address_create_adds_one_address(customers, store_id):
    customer = (await customers.CreateCustomer(create(store_id, unique_email(), ""))).customer
    request = pb.CreateCustomerAddressRequest(
        store_id=store_id,
        customer_id=customer.customer_id,
        request_id=str(uuid.uuid4()),
        address=customer_pb2.CustomerAddress(
            recipient_name="Ann", address_line1="Main St 1", city="Berlin", country_code="DE"
        ),
    )
    responses = await asyncio.gather(*(customers.CreateCustomerAddress(request) for _ in range(5)))
    responses.append(await customers.CreateCustomerAddress(request))
    assert len({response.address.address_id for response in responses}) == 1
    listed = await customers.ListCustomerAddresses(
        pb.ListCustomerAddressesRequest(store_id=store_id, customer_id=customer.customer_id)
    )
    assert len(listed.addresses) == 1


async def test_an_address_request_id_reused_for_another_customer_is_invalid(customers, store_id):
    """Same address, same request_id, another customer: not a retry, and nothing of
    the first customer's address comes back."""
    ann, bob = [
        (await customers.CreateCustomer(create(store_id, unique_email(), ""))).customer
        for _ in range(2)
    ]
    address = customer_pb2.CustomerAddress(
        recipient_name="Ann", address_line1="Main St 1", city="Berlin", country_code="DE"
    )
    request_id = str(uuid.uuid4())

    def request(customer_id: int) -> pb.CreateCustomerAddressRequest:
        return pb.CreateCustomerAddressRequest(
            store_id=store_id, customer_id=customer_id, request_id=request_id, address=address
        )

    await customers.CreateCustomerAddress(request(ann.customer_id))
    failure = await rpc_error(
        customers.CreateCustomerAddress(request(bob.customer_id)), Code.INVALID_ARGUMENT
    )
    assert failure.violated_fields == {"request_id"}
    listed = await customers.ListCustomerAddresses(
        pb.ListCustomerAddressesRequest(store_id=store_id, customer_id=bob.customer_id)
    )
    assert list(listed.addresses) == []


async def age_request_ids(sessions, store_id: int, hours: float) -> None:
    """Makes the store's remembered request_ids `hours` old."""
    async with sessions() as session:
        await session.execute(
            update(IdempotencyKey)
            .where(IdempotencyKey.store_id == store_id)
            .values(created_at=utc_now() - timedelta(hours=hours))
        )
        await session.commit()


async def remembered(sessions, store_id: int) -> int:
    async with sessions() as session:
        return await session.scalar(
            select(func.count())
            .select_from(IdempotencyKey)
            .where(IdempotencyKey.store_id == store_id)
        )


async def test_request_ids_are_forgotten_after_the_retention(
    settings, server, customers, orders, store_id, sessions
):
    """A server forgets request_ids older than the retention (at start and then
    periodically), so the table stays bounded; a retry after that creates anew."""
    order_request = order_service_pb2.CreateOrderRequest(
        store_id=store_id,
        currency_code="EUR",
        request_id=str(uuid.uuid4()),
        line_items=[line()],
    )
    first = (await orders.CreateOrder(order_request)).order
    kept = (await orders.CreateOrder(order_request)).order
    assert kept.order_id == first.order_id
    await customers.CreateCustomer(create(store_id, unique_email(), str(uuid.uuid4())))
    assert await remembered(sessions, store_id) == 2

    await age_request_ids(sessions, store_id, settings.request_id_retention_hours + 1)
    # Another server starting on the database forgets them at once.
    app = Application(settings.model_copy(update={"request_id_retention_hours": 1}))
    await app.start("127.0.0.1:0")
    try:
        for _ in range(200):  # up to 10 s for the purge the start began
            if not await remembered(sessions, store_id):
                break
            await asyncio.sleep(0.05)
        assert await remembered(sessions, store_id) == 0
        assert await app.forget_expired_request_ids() == 0  # nothing left to forget
    finally:
        await app.stop(grace=0)

    again = (await orders.CreateOrder(order_request)).order
    assert again.order_id != first.order_id
