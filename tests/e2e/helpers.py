"""Small builders for requests used across the end-to-end tests."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import grpc
from commerce.customers.v1 import customer_pb2, customer_service_pb2, customer_service_pb2_grpc
from commerce.orders.v1 import order_pb2, order_service_pb2, order_service_pb2_grpc

from services.core.settings import Settings
from services.server import Application

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


def line(sku: str = "SKU-1", quantity: int = 1, unit_price_minor: int = 1000, **fields: object):
    return order_pb2.OrderLineItem(
        sku=sku,
        name=str(fields.pop("name", f"Product {sku}")),
        quantity=quantity,
        unit_price_minor=unit_price_minor,
        **fields,
    )


async def create_order(
    stub: order_service_pb2_grpc.OrderServiceStub,
    store_id: int,
    customer_id: int = 0,
    **fields: object,
) -> order_pb2.Order:
    """Places an order (by default: one line of 10.00 EUR)."""
    fields.setdefault("line_items", [line()])
    fields.setdefault("currency_code", "EUR")
    response = await stub.CreateOrder(
        order_service_pb2.CreateOrderRequest(store_id=store_id, customer_id=customer_id, **fields)
    )
    return response.order


@asynccontextmanager
async def serving(
    settings: Settings, module_names: Sequence[str] | None = None
) -> AsyncIterator[tuple[Application, grpc.aio.Channel]]:
    """An in-process server of its own on a free loopback port, and a channel to it;
    stopped at the end."""
    app = Application(settings, module_names)
    port = await app.start("127.0.0.1:0")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield app, channel
    finally:
        await app.stop(grace=0)
