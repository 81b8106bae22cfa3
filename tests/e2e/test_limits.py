"""Limits answer at once instead of letting callers wait without bound: an oversized
message, more concurrent RPCs than the server takes, and a database pool with no free
connection. Each time the server goes on serving."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc
import pytest
from commerce.customers.v1 import customer_pb2, customer_service_pb2_grpc
from google.protobuf import field_mask_pb2
from sqlalchemy import update

from services.core.rpc import metrics
from services.customers.models import Customer
from tests.e2e.helpers import create_customer, pb, serving
from tests.errors import rpc_error
from tests.orm import UnitOfWork

Code = grpc.StatusCode


@asynccontextmanager
async def locked(sessions, store_id: int, customer_id: int) -> AsyncIterator[None]:
    """Holds a write lock on the customer (PostgreSQL: its row; SQLite: the database)
    in another connection, so that the server's writes to it wait."""
    async with UnitOfWork(sessions) as uow:
        await uow.session.execute(
            update(Customer)
            .where(Customer.store_id == store_id, Customer.customer_id == customer_id)
            .values(first_name="held")
        )
        yield


@asynccontextmanager
async def server_with(
    settings, **changes: object
) -> AsyncIterator[customer_service_pb2_grpc.CustomerServiceStub]:
    """A stub on a customers-only server with these settings changed."""
    async with serving(settings.model_copy(update=changes), ["customers"]) as (_, channel):
        yield customer_service_pb2_grpc.CustomerServiceStub(channel)


async def in_flight(count: int) -> None:
    """Waits until the customers servicer runs `count` calls (the servers of a test
    process share its metrics; no other call runs meanwhile)."""
    gauge = metrics.IN_FLIGHT.labels("commerce.customers.v1.CustomerService")
    for _ in range(200):
        if gauge._value.get() >= count:
            await asyncio.sleep(0.1)  # from the interceptor into the database call
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never saw {count} calls in flight")


def rename(stub, store_id: int, customer_id: int, *, timeout: float = 20):
    return stub.UpdateCustomer(
        pb.UpdateCustomerRequest(
            store_id=store_id,
            customer_id=customer_id,
            customer=customer_pb2.Customer(first_name="Renamed"),
            update_mask=field_mask_pb2.FieldMask(paths=["first_name"]),
        ),
        timeout=timeout,
    )


async def test_an_oversized_request_is_resource_exhausted(customers, store_id):
    huge = "x" * (5 * 1024 * 1024)  # above the default 4 MiB
    request = pb.CreateCustomerRequest(store_id=store_id, email="big@example.com", first_name=huge)
    failure = await rpc_error(customers.CreateCustomer(request), Code.RESOURCE_EXHAUSTED)
    assert "message" in failure.message.lower()
    assert (await create_customer(customers, store_id)).customer_id > 0  # still serving


async def test_rpcs_beyond_the_concurrency_limit_are_refused_at_once(
    settings, customers, sessions, store_id
):
    customer = await create_customer(customers, store_id)
    cid = customer.customer_id
    async with server_with(settings, max_concurrent_rpcs=2) as limited:
        async with locked(sessions, store_id, cid):
            waiting = [asyncio.ensure_future(rename(limited, store_id, cid)) for _ in range(2)]
            await in_flight(2)  # both are in the server, waiting for the lock
            loop = asyncio.get_running_loop()
            began = loop.time()
            await rpc_error(
                limited.GetCustomer(
                    pb.GetCustomerRequest(store_id=store_id, customer_id=cid), timeout=20
                ),
                Code.RESOURCE_EXHAUSTED,
            )
            refused_after = loop.time() - began
            assert not any(call.done() for call in waiting)
        # Released: the two waiting calls finish, and new calls are taken again.
        assert all(
            answer.customer.first_name == "Renamed" for answer in await asyncio.gather(*waiting)
        )
        got = await limited.GetCustomer(pb.GetCustomerRequest(store_id=store_id, customer_id=cid))
        assert got.customer.customer_id == cid
    assert refused_after < 5  # refused, not queued behind the lock


async def test_a_busy_connection_pool_answers_resource_exhausted_or_the_deadline(
    settings, backend, customers, sessions, store_id
):
    if backend != "postgresql":
        pytest.skip("on SQLite a read never waits for the writer: no pool to exhaust")
    customer = await create_customer(customers, store_id)
    cid = customer.customer_id
    async with server_with(settings, db_pool_size=1, db_connect_timeout=0.5) as small:
        async with locked(sessions, store_id, cid):
            holding = asyncio.ensure_future(rename(small, store_id, cid))
            await in_flight(1)  # it holds the only pooled connection
            get = pb.GetCustomerRequest(store_id=store_id, customer_id=cid)
            failure = await rpc_error(small.GetCustomer(get, timeout=20), Code.RESOURCE_EXHAUSTED)
            assert failure.message == "server busy: no database connection free"
            assert failure.error_info.reason == "SERVER_BUSY"
            assert failure.retry_info.retry_delay.ToMilliseconds() == 200
            # With a deadline shorter than the pool's wait, the deadline answers first.
            await rpc_error(small.GetCustomer(get, timeout=0.2), Code.DEADLINE_EXCEEDED)
        assert (await holding).customer.first_name == "Renamed"
        assert (await small.GetCustomer(get)).customer.first_name == "Renamed"


async def silent_peer(port: int, seconds: float) -> bool:
    """Opens an HTTP/2 connection like a client that then dies without closing it: it
    acknowledges the server's SETTINGS but never answers a PING. True when the server
    closes the connection within `seconds`."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
    await writer.drain()
    settings_ack = b"\x00\x00\x00\x04\x01\x00\x00\x00\x00"
    try:
        async with asyncio.timeout(seconds):
            while header := await reader.read(9):
                if len(header) < 9:
                    header += await reader.readexactly(9 - len(header))
                length, kind, flags = int.from_bytes(header[:3]), header[3], header[4]
                await reader.readexactly(length)
                if kind == 0x4 and not flags & 0x1:  # the server's SETTINGS
                    writer.write(settings_ack)
                    await writer.drain()
            return True  # end of stream: the server hung up
    except TimeoutError:
        return False
    except (ConnectionError, asyncio.IncompleteReadError):
        return True
    finally:
        writer.close()


async def test_keepalive_drops_a_peer_that_stopped_answering(settings):
    quick = settings.model_copy(update={"keepalive_seconds": 1, "keepalive_timeout_seconds": 1})
    async with serving(quick, ["customers"]) as (app, _):
        assert await silent_peer(app.port, seconds=10)  # pinged after 1 s, dropped 1 s later
    # The control: with the default minute of keepalive, the same peer is still
    # connected after 4 s, so it was the keepalive that dropped it.
    async with serving(settings, ["customers"]) as (app, _):
        assert not await silent_peer(app.port, seconds=4)
