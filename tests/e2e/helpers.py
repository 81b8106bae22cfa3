"""Small builders for requests used across the end-to-end tests."""

from __future__ import annotations

import uuid

from commerce.customers.v1 import customer_pb2, customer_service_pb2, customer_service_pb2_grpc

pb = customer_service_pb2
PASSWORD = "correct horse battery"


def unique_email(prefix: str = "customer") -> str:
    return f"{prefix}.{uuid.uuid4().hex[:10]}@example.com"


async def create_customer(
    stub: customer_service_pb2_grpc.CustomerServiceStub, store_id: int, **fields: object
) -> customer_pb2.Customer:
    fields.setdefault("email", unique_email())
    response = await stub.CreateCustomer(pb.CreateCustomerRequest(store_id=store_id, **fields))
    return response.customer
