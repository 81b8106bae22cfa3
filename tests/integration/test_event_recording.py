"""Events and the changes they describe commit or roll back together, through the
service layers on a real database; and an order's old status is the one the change
really moved it from, even when another change of the order committed first."""

from __future__ import annotations

import asyncio
import time

import pytest
from commerce.orders.v1 import order_pb2
from sqlalchemy import text

from services.core.db.engine import create_engine
from services.core.db.outbox import DomainEvent, EncodedPayload
from services.core.db.unit_of_work import TenantDatabase
from services.core.domain.pagination import PageTokenCodec
from services.core.domain.passwords import PasswordHasher
from services.customers.addresses import AddressService
from services.customers.events import CustomerAddressCreated, CustomerCreated
from services.customers.messages import register_event_encoders as register_customer_events
from services.customers.rules import ADDRESS_WRITABLE_FIELDS
from services.customers.service import CustomerService, NewCustomer
from services.orders import queries as order_queries
from services.orders.events import OrderCreated
from services.orders.models import OrderStatus
from services.orders.rules import NewLineItem, NewOrder, StatusChange
from services.orders.service import OrderService
from tests.recorded_events import EventLog

# Every writable field, as the servicer passes them.
ADDRESS: dict[str, object] = {
    name: False if name.startswith("default_") else "" for name in ADDRESS_WRITABLE_FIELDS
} | {"recipient_name": "Ann", "address_line1": "1 Main St", "city": "Springfield"}


@pytest.fixture
async def customer_service(database):
    passwords = PasswordHasher(rounds=4, max_workers=1)
    yield CustomerService(database, passwords, PageTokenCodec("secret"))
    passwords.close()


@pytest.fixture
def order_service(database) -> OrderService:
    return OrderService(database, PageTokenCodec("secret"))


class EncodingFailed(Exception):
    pass


def failing_encoder(event: DomainEvent) -> EncodedPayload:
    raise EncodingFailed(type(event).__name__)


@pytest.fixture
async def partial_database(settings):
    """A database whose customers module encodes its events, but for CustomerCreated
    and CustomerAddressCreated, whose encoding fails: a write that records one of
    those fails at commit, after the events recorded before it were written."""
    database = TenantDatabase(create_engine(settings.database_url, pool_size=2))
    register_customer_events(database.event_encoders)
    database.event_encoders.register(CustomerCreated, failing_encoder)
    database.event_encoders.register(CustomerAddressCreated, failing_encoder)
    yield database
    await database.engine.dispose()


def one_line() -> list[NewLineItem]:
    return [NewLineItem("SKU-1", "Thing", 1, 500)]


async def test_a_unit_of_work_that_records_and_then_fails_leaves_no_event(
    database, order_service, sessions, store_id
):
    log = EventLog(sessions, store_id)
    order = await order_service.create_order(store_id, NewOrder(one_line(), "EUR"))
    assert [event.short_type for event in await log.new()] == ["OrderCreated"]

    async def record_then_fail() -> None:
        async with database.writing(store_id) as uow:
            uow.record(OrderCreated(order))
            raise RuntimeError("the change failed after its event was recorded")

    with pytest.raises(RuntimeError):
        await record_then_fail()
    assert await log.new() == []
    # Committed, the same unit of work writes it.
    async with database.writing(store_id) as uow:
        uow.record(OrderCreated(order))
        await uow.commit()
    assert [event.subject for event in await log.new()] == [f"orders/{order.order_id}"]


async def test_a_write_that_fails_at_commit_leaves_neither_change_nor_event(
    partial_database, database, customer_service, sessions, store_id
):
    """The address create records the update of the address that loses its default
    flag, then its own event, which cannot be encoded: the update's event row was
    already written in the transaction, and goes with it."""
    log = EventLog(sessions, store_id)
    customer = await customer_service.create_customer(store_id, NewCustomer("a@example.com"))
    first = await AddressService(database, PageTokenCodec("secret")).create_address(
        store_id, customer.customer_id, ADDRESS | {"country_code": "US", "default_shipping": True}
    )
    await log.new()

    failing = AddressService(partial_database, PageTokenCodec("secret"))
    with pytest.raises(EncodingFailed):
        await failing.create_address(
            store_id,
            customer.customer_id,
            ADDRESS | {"country_code": "US", "default_shipping": True},
        )
    assert await log.new() == []
    page = await failing.list_addresses(store_id, customer.customer_id)
    assert page.addresses == [first]  # still the default, and still the only one

    passwords = PasswordHasher(rounds=4, max_workers=1)
    try:
        with pytest.raises(EncodingFailed):
            await CustomerService(
                partial_database, passwords, PageTokenCodec("secret")
            ).create_customer(store_id, NewCustomer("b@example.com"))
    finally:
        passwords.close()
    assert await log.new() == []
    listed = await customer_service.list_customers(store_id)
    assert [c.email for c in listed.customers] == ["a@example.com"]


async def wait_for_lock_waiter(sessions, marker: str) -> None:
    """Until a statement containing `marker` waits for a lock (PostgreSQL)."""
    deadline = time.monotonic() + 30
    query = text(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE wait_event_type = 'Lock' AND query LIKE :pattern"
    )
    while time.monotonic() < deadline:
        async with sessions() as session:
            waiting = (await session.execute(query, {"pattern": f"%{marker}%"})).scalar_one()
        if waiting:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"no statement with {marker!r} ever waited for a lock")


async def test_a_cancel_that_waited_for_a_payment_records_paid_as_its_old_status(
    backend, database, order_service, sessions, store_id
):
    """The cancel's snapshot saw the order PENDING; it waited for the payment's lock
    and moved the order from PAID, which is what its event says."""
    if backend != "postgresql":
        pytest.skip("SQLite has one writer at a time: nothing can change the order meanwhile")
    log = EventLog(sessions, store_id)
    order = await order_service.create_order(store_id, NewOrder(one_line(), "EUR"))
    async with database.writing(store_id) as uow:
        paid = await order_queries.move_order(uow, order.order_id, OrderStatus.PAID)
        assert paid is not None
        cancel = asyncio.create_task(
            order_service.change_status(
                store_id, StatusChange(order.order_id, OrderStatus.CANCELLED, cancel_reason="late")
            )
        )
        await wait_for_lock_waiter(sessions, "locked_order")
        await uow.commit()
    cancelled = await cancel
    assert cancelled.status == OrderStatus.CANCELLED
    events = await log.new()
    assert [event.short_type for event in events] == ["OrderCreated", "OrderStatusChanged"]
    assert events[1].payload.old_status == order_pb2.ORDER_STATUS_PAID
