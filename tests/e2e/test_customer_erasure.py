"""EraseCustomer through a real server, on both databases: after it, no table, no
response of a read RPC, no event of the feed and no log line holds any of the
customer's personal data, in any module mounted; what is not personal (orders,
totals, the ledger's points, the events themselves) stays and still adds up. A
module that refuses rolls the whole erasure back; a second erasure changes nothing;
a store never reaches another's customer."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import grpc
import pytest
from commerce.customers.v1 import customer_pb2, customer_service_pb2_grpc
from commerce.customers.v1 import customer_service_pb2 as pb
from commerce.events.v1 import event_service_pb2, event_service_pb2_grpc
from commerce.loyalty.v1 import customer_loyalty_service_pb2 as lpb
from commerce.loyalty.v1 import customer_loyalty_service_pb2_grpc
from commerce.orders.v1 import customer_order_service_pb2 as copb
from commerce.orders.v1 import customer_order_service_pb2_grpc, order_service_pb2_grpc
from commerce.orders.v1 import order_service_pb2 as opb
from google.protobuf import field_mask_pb2
from google.protobuf.message import Message
from sqlalchemy import MetaData, Table, inspect, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker
from sqlalchemy.types import LargeBinary, String

from services.core.db.engine import create_engine
from services.core.db.unit_of_work import UnitOfWork
from services.core.domain.errors import FailedPrecondition
from services.core.logs import QUIET_DRIVER_LOGGERS
from services.core.settings import Settings
from services.server import Application
from tests.conftest import TEST_BCRYPT_ROUNDS
from tests.e2e.helpers import PASSWORD, create_customer, create_order, line, serving
from tests.e2e.test_event_feed import place_all
from tests.e2e.test_module_subsets import migrated_store
from tests.errors import rpc_error
from tests.orm import create_session_factory
from tests.recorded_events import recorded

Code = grpc.StatusCode


@dataclass
class Stubs:
    customers: customer_service_pb2_grpc.CustomerServiceStub
    orders: order_service_pb2_grpc.OrderServiceStub
    customer_orders: customer_order_service_pb2_grpc.CustomerOrderServiceStub
    loyalty: customer_loyalty_service_pb2_grpc.CustomerLoyaltyServiceStub
    events: event_service_pb2_grpc.EventServiceStub

    @classmethod
    def of(cls, channel: grpc.aio.Channel) -> Stubs:
        return cls(
            customer_service_pb2_grpc.CustomerServiceStub(channel),
            order_service_pb2_grpc.OrderServiceStub(channel),
            customer_order_service_pb2_grpc.CustomerOrderServiceStub(channel),
            customer_loyalty_service_pb2_grpc.CustomerLoyaltyServiceStub(channel),
            event_service_pb2_grpc.EventServiceStub(channel),
        )


@dataclass
class Personal:
    """Everything personal the test gives one customer: each value unique to the test,
    so finding it anywhere means it was not erased."""

    token: str = field(default_factory=lambda: uuid.uuid4().hex[:10])

    @property
    def email(self) -> str:
        return f"erasable.{self.token}@example.com"

    @property
    def work_email(self) -> str:
        return f"erasable.work.{self.token}@example.net"

    @property
    def first_name(self) -> str:
        return f"Annabel{self.token}"

    @property
    def last_name(self) -> str:
        return f"Smithers{self.token}"

    @property
    def new_last_name(self) -> str:
        return f"Jonesworth{self.token}"

    @property
    def phone(self) -> str:
        digits = f"{int(self.token, 16) % 10**8:08d}"
        return f"+49 (30) 555-{digits[:4]}-{digits[4:]}"

    @property
    def recipient(self) -> str:
        return f"Recipient {self.token}"

    @property
    def street(self) -> str:
        return f"{self.token} Erasure Street"

    @property
    def city(self) -> str:
        return f"Forgetton{self.token}"

    @property
    def old_street(self) -> str:
        return f"{self.token} Former Lane"

    @property
    def cancel_reason(self) -> str:
        return f"{self.first_name} changed her mind"

    @property
    def loyalty_reason(self) -> str:
        return f"birthday gift for {self.first_name}"

    @property
    def tag(self) -> str:
        return f"tag{self.token}"

    def needles(self, *, modules: Iterable[str] = ("customers", "orders", "loyalty")) -> list[str]:
        found = [
            self.email,
            self.first_name,
            self.last_name,
            self.new_last_name,
            self.phone,
            self.recipient,
            self.street,
            self.city,
            self.old_street,
            self.tag,
        ]
        if "orders" in modules:
            found += [self.work_email, self.cancel_reason]
        if "loyalty" in modules:
            found.append(self.loyalty_reason)
        return found


def address(personal: Personal, street: str, **fields: object) -> customer_pb2.CustomerAddress:
    return customer_pb2.CustomerAddress(
        recipient_name=personal.recipient,
        address_line1=street,
        city=personal.city,
        postal_code="10115",
        country_code="DE",
        phone=personal.phone,
        **fields,
    )


@dataclass
class Seeded:
    customer: customer_pb2.Customer
    address_ids: list[int]
    order_ids: list[int]
    # The request_id that created the customer.
    request_id: str


async def seed_customer(
    s: Stubs, store_id: int, personal: Personal, *, modules: Iterable[str]
) -> Seeded:
    """A customer with every kind of personal data the mounted modules keep: a
    password, a changed name, a failed login (its throttle), a login, addresses (one
    changed, one deleted), tags; orders with contact emails, one cancelled with a
    reason, one paid; loyalty points with reasons."""
    request_id = str(uuid.uuid4())
    customer = await create_customer(
        s.customers,
        store_id,
        request_id=request_id,
        email=personal.email,
        first_name=personal.first_name,
        last_name=personal.last_name,
        phone=personal.phone,
        preferred_language="de-AT",
        marketing_consent=True,
        password=PASSWORD,
    )
    cid = customer.customer_id
    customer = (
        await s.customers.UpdateCustomer(
            pb.UpdateCustomerRequest(
                store_id=store_id,
                customer_id=cid,
                customer=customer_pb2.Customer(last_name=personal.new_last_name),
                update_mask=field_mask_pb2.FieldMask(paths=["last_name"]),
            )
        )
    ).customer
    await rpc_error(
        s.customers.AuthenticateCustomer(
            pb.AuthenticateCustomerRequest(
                store_id=store_id, email=personal.email, password="wrong password"
            )
        ),
        Code.UNAUTHENTICATED,
    )
    await s.customers.AuthenticateCustomer(
        pb.AuthenticateCustomerRequest(store_id=store_id, email=personal.email, password=PASSWORD)
    )
    kept = (
        await s.customers.CreateCustomerAddress(
            pb.CreateCustomerAddressRequest(
                store_id=store_id,
                customer_id=cid,
                address=address(personal, personal.old_street, default_shipping=True),
                request_id=str(uuid.uuid4()),
            )
        )
    ).address
    await s.customers.UpdateCustomerAddress(
        pb.UpdateCustomerAddressRequest(
            store_id=store_id,
            customer_id=cid,
            address_id=kept.address_id,
            address=customer_pb2.CustomerAddress(address_line1=personal.street),
            update_mask=field_mask_pb2.FieldMask(paths=["address_line1"]),
        )
    )
    dropped = (
        await s.customers.CreateCustomerAddress(
            pb.CreateCustomerAddressRequest(
                store_id=store_id, customer_id=cid, address=address(personal, personal.street)
            )
        )
    ).address
    await s.customers.DeleteCustomerAddress(
        pb.DeleteCustomerAddressRequest(
            store_id=store_id, customer_id=cid, address_id=dropped.address_id
        )
    )
    order_ids = []
    if "orders" in modules:
        placed = [
            await create_order(
                s.orders,
                store_id,
                cid,
                contact_email=email,
                line_items=[line("MUG-1", 2, 1299)],
                request_id=str(uuid.uuid4()),
            )
            for email in (personal.email, personal.work_email, personal.email)
        ]
        order_ids = [order.order_id for order in placed]
        await s.orders.CancelOrder(
            opb.CancelOrderRequest(
                store_id=store_id,
                order_id=order_ids[0],
                reason=personal.cancel_reason,
                request_id=str(uuid.uuid4()),
            )
        )
        await s.orders.PayOrder(opb.PayOrderRequest(store_id=store_id, order_id=order_ids[1]))
    if "loyalty" in modules:
        for points in (500, -120):
            fields = {
                "store_id": store_id,
                "customer_id": cid,
                "reason": personal.loyalty_reason,
                "request_id": str(uuid.uuid4()),
            }
            if points > 0:
                await s.loyalty.AddLoyaltyPoints(lpb.AddLoyaltyPointsRequest(points=500, **fields))
            else:
                await s.loyalty.RedeemLoyaltyPoints(
                    lpb.RedeemLoyaltyPointsRequest(points=120, **fields)
                )
    return Seeded(customer, [kept.address_id], order_ids, request_id)


async def give_tag(connection: AsyncConnection, store_id: int, customer_id: int, tag: str) -> None:
    """A tag, as the tag RPCs store it (in customers.tags and customer_tags)."""
    metadata = MetaData()
    customers = await connection.run_sync(
        lambda sync: Table("customers", metadata, autoload_with=sync)
    )
    tags = await connection.run_sync(
        lambda sync: Table("customer_tags", metadata, autoload_with=sync)
    )
    key = (customers.c.store_id == store_id) & (customers.c.customer_id == customer_id)
    await connection.execute(customers.update().where(key).values(tags=tag))
    await connection.execute(
        tags.insert().values(store_id=store_id, tag=tag, customer_id=customer_id)
    )


async def found_in_tables(
    connection: AsyncConnection, store_id: int, needles: list[str]
) -> dict[str, set[str]]:
    """Where each needle occurs, as "table.column": every text and binary column of
    every table the migrations made (read from the database, so a table added later
    is searched too), the store's rows of tables that have a store_id, all rows of
    the others."""

    def tables_of(sync: object) -> list[Table]:
        metadata = MetaData()
        names = inspect(sync).get_table_names()
        return [Table(name, metadata, autoload_with=sync) for name in names]

    found: dict[str, set[str]] = {}
    for table in await connection.run_sync(tables_of):
        columns = [c for c in table.c if isinstance(c.type, (String, LargeBinary))]
        if not columns:
            continue
        query = select(*columns)
        if "store_id" in table.c:
            query = query.where(table.c.store_id == store_id)
        for row in await connection.execute(query):
            for column, value in zip(columns, row, strict=True):
                if value is None:
                    continue
                if isinstance(value, (bytes, bytearray, memoryview)):
                    hits = [n for n in needles if n.encode() in bytes(value)]
                else:
                    hits = [n for n in needles if n.lower() in str(value).lower()]
                for needle in hits:
                    found.setdefault(needle, set()).add(f"{table.name}.{column.name}")
    return found


async def all_events(s: Stubs, store_id: int) -> list[Message]:
    events, token = [], ""
    while True:
        page = await s.events.ListEvents(
            event_service_pb2.ListEventsRequest(store_id=store_id, page_token=token)
        )
        events += page.events
        token = page.next_page_token
        if not token:
            return events


async def read_everything(
    s: Stubs, store_id: int, customer_id: int, order_ids: list[int], *, modules: Iterable[str]
) -> list[Message]:
    """The responses of every read RPC that can show the customer or its data."""
    c = s.customers
    reads: list[Message] = [
        await c.GetCustomer(pb.GetCustomerRequest(store_id=store_id, customer_id=customer_id)),
        await c.BatchGetCustomers(
            pb.BatchGetCustomersRequest(store_id=store_id, customer_ids=[customer_id])
        ),
        await c.ListCustomerAddresses(
            pb.ListCustomerAddressesRequest(store_id=store_id, customer_id=customer_id)
        ),
        await c.GetCustomerMetrics(
            pb.GetCustomerMetricsRequest(store_id=store_id, customer_id=customer_id)
        ),
    ]
    for status in customer_pb2.CustomerStatus.values():
        reads.append(
            await c.ListCustomers(pb.ListCustomersRequest(store_id=store_id, status=status))
        )
    if "orders" in modules:
        co = s.customer_orders
        reads += [
            await s.orders.GetOrder(opb.GetOrderRequest(store_id=store_id, order_id=o))
            for o in order_ids
        ]
        reads += [
            await s.orders.ListOrders(opb.ListOrdersRequest(store_id=store_id)),
            await co.ListCustomerOrders(
                copb.ListCustomerOrdersRequest(store_id=store_id, customer_id=customer_id)
            ),
            await co.GetRecentCustomerOrders(
                copb.GetRecentCustomerOrdersRequest(store_id=store_id, customer_id=customer_id)
            ),
            await co.GetCustomerOrderStats(
                copb.GetCustomerOrderStatsRequest(store_id=store_id, customer_id=customer_id)
            ),
        ]
    if "loyalty" in modules:
        reads.append(
            await s.loyalty.GetCustomerLoyalty(
                lpb.GetCustomerLoyaltyRequest(
                    store_id=store_id, customer_id=customer_id, history_limit=100
                )
            )
        )
    return reads


def leaks(messages: Iterable[Message], needles: list[str]) -> list[str]:
    """The needles any of `messages` carries, in its text form or its bytes (an Any
    payload of the feed is searched as bytes)."""
    text = "\n".join(str(message) for message in messages)
    raw = b"\n".join(message.SerializeToString() for message in messages)
    return [n for n in needles if n in text or n.encode() in raw]


def log_text(caplog: pytest.LogCaptureFixture) -> str:
    """Every captured record: its message and its extra fields (the access log's)."""
    return "\n".join(f"{r.getMessage()} {vars(r)}" for r in caplog.records)


@pytest.fixture
def capture_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Everything the server logs, at DEBUG, but the database drivers' statements,
    which it never logs below WARNING (services.core.logs). (caplog.set_level on a
    driver's logger would set its one handler's level too.)"""
    caplog.set_level(logging.DEBUG)
    drivers = [logging.getLogger(name) for name in QUIET_DRIVER_LOGGERS]
    levels = [driver.level for driver in drivers]
    for driver in drivers:
        driver.setLevel(logging.WARNING)
    yield caplog
    for driver, level in zip(drivers, levels, strict=True):
        driver.setLevel(level)


async def outbox_count(sessions: async_sessionmaker[AsyncSession], store_id: int) -> int:
    return len(await recorded(sessions, store_id))


async def erase(s: Stubs, store_id: int, customer_id: int) -> customer_pb2.Customer:
    response = await s.customers.EraseCustomer(
        pb.EraseCustomerRequest(store_id=store_id, customer_id=customer_id)
    )
    return response.customer


ALL_MODULES = ("customers", "orders", "loyalty")


async def test_erasure_leaves_no_personal_data_anywhere(
    server: Application, channel, sessions, store_id, capture_logs
):
    s = Stubs.of(channel)
    ann, bob = Personal(), Personal()
    seeded = await seed_customer(s, store_id, ann, modules=ALL_MODULES)
    other = await seed_customer(s, store_id, bob, modules=ALL_MODULES)
    cid = seeded.customer.customer_id
    async with sessions() as session, session.begin():
        connection = await session.connection()
        await give_tag(connection, store_id, cid, ann.tag)
        await give_tag(connection, store_id, other.customer.customer_id, bob.tag)
    await place_all(server)
    needles = ann.needles()

    # The search below finds every piece of data where it is kept: it is not vacuous.
    async with sessions() as session:
        before = await found_in_tables(await session.connection(), store_id, needles)
    assert set(before) == set(needles)
    assert leaks(await all_events(s, store_id), needles)
    stats = copb.GetCustomerOrderStatsRequest(store_id=store_id, customer_id=cid)
    stats_before = (await s.customer_orders.GetCustomerOrderStats(stats)).stats
    loyalty = lpb.GetCustomerLoyaltyRequest(store_id=store_id, customer_id=cid, history_limit=10)
    loyalty_before = await s.loyalty.GetCustomerLoyalty(loyalty)
    events_before = await recorded(sessions, store_id)
    async with sessions() as session:
        bob_before = await found_in_tables(await session.connection(), store_id, bob.needles())
    assert set(bob_before) == set(bob.needles())

    erased = await erase(s, store_id, cid)

    assert erased.status == customer_pb2.CUSTOMER_STATUS_ERASED
    assert erased.HasField("erase_time")
    assert (erased.customer_id, erased.customer_number, erased.create_time) == (
        cid,
        seeded.customer.customer_number,
        seeded.customer.create_time,
    )
    assert (erased.email, erased.first_name, erased.last_name, erased.phone) == ("", "", "", "")
    assert (erased.preferred_language, erased.marketing_consent, erased.has_password) == (
        "",
        False,
        False,
    )
    assert list(erased.tags) == []
    assert erased.etag != seeded.customer.etag

    # No table keeps any of it.
    async with sessions() as session:
        assert await found_in_tables(await session.connection(), store_id, needles) == {}
    # No read shows any of it, nor the feed.
    await place_all(server)
    reads = await read_everything(s, store_id, cid, seeded.order_ids, modules=ALL_MODULES)
    assert leaks(reads, needles) == []
    events = await all_events(s, store_id)
    assert leaks(events, needles) == []
    # The events themselves stay, in their places; one more says the customer was erased.
    events_after = await recorded(sessions, store_id)
    assert [(e.id, e.event_id, e.subject, e.sequence) for e in events_after[:-1]] == [
        (e.id, e.event_id, e.subject, e.sequence) for e in events_before
    ]
    last = events_after[-1]
    assert (last.event_type, last.subject) == (
        "commerce.customers.v1.CustomerErased",
        f"customers/{cid}",
    )
    assert (last.payload.store_id, last.payload.customer_id, last.payload.customer) == (
        store_id,
        cid,
        f"stores/{store_id}/customers/{cid}",
    )
    assert last.payload.erase_time == erased.erase_time
    # Orders, statistics and the ledger still add up.
    assert (await s.customer_orders.GetCustomerOrderStats(stats)).stats == stats_before
    loyalty_after = await s.loyalty.GetCustomerLoyalty(loyalty)
    assert loyalty_after.loyalty == loyalty_before.loyalty
    assert [(m.movement_id, m.points, m.balance_after) for m in loyalty_after.recent_movements] == [
        (m.movement_id, m.points, m.balance_after) for m in loyalty_before.recent_movements
    ]
    assert all(m.reason == "" for m in loyalty_after.recent_movements)
    for order_id in seeded.order_ids:
        order = (
            await s.orders.GetOrder(opb.GetOrderRequest(store_id=store_id, order_id=order_id))
        ).order
        assert (order.contact_email, order.cancel_reason) == ("", "")
        assert order.total.amount_minor == 2598
        assert order.customer == erased
    # The other customer of the store keeps everything.
    async with sessions() as session:
        bob_after = await found_in_tables(await session.connection(), store_id, bob.needles())
    assert bob_after == bob_before
    # Nothing logged during the whole test carried any of it (every call was logged).
    logged = log_text(capture_logs)
    assert sum(r.name == "commerce.rpc" for r in capture_logs.records) > 50
    assert [n for n in needles if n in logged] == []


async def test_an_erased_customer_can_take_no_data_and_its_email_is_free(channel, store_id):
    s = Stubs.of(channel)
    ann = Personal()
    seeded = await seed_customer(s, store_id, ann, modules=ALL_MODULES)
    cid = seeded.customer.customer_id
    erased = await erase(s, store_id, cid)

    # Its email signs in no more: as for an unknown email.
    login = pb.AuthenticateCustomerRequest(store_id=store_id, email=ann.email, password=PASSWORD)
    failure = await rpc_error(s.customers.AuthenticateCustomer(login), Code.UNAUTHENTICATED)
    assert failure.error_info.reason == "INVALID_CREDENTIALS"

    refused = [
        s.customers.UpdateCustomer(
            pb.UpdateCustomerRequest(
                store_id=store_id,
                customer_id=cid,
                customer=customer_pb2.Customer(first_name="Back"),
                update_mask=field_mask_pb2.FieldMask(paths=["first_name"]),
            )
        ),
        s.customers.SetCustomerStatus(
            pb.SetCustomerStatusRequest(
                store_id=store_id, customer_id=cid, status=customer_pb2.CUSTOMER_STATUS_ACTIVE
            )
        ),
        s.customers.SetCustomerStatus(
            pb.SetCustomerStatusRequest(
                store_id=store_id, customer_id=cid, status=customer_pb2.CUSTOMER_STATUS_INACTIVE
            )
        ),
        s.customers.ChangeCustomerPassword(
            pb.ChangeCustomerPasswordRequest(
                store_id=store_id, customer_id=cid, new_password="another good password"
            )
        ),
        s.customers.CreateCustomerAddress(
            pb.CreateCustomerAddressRequest(
                store_id=store_id, customer_id=cid, address=address(ann, ann.street)
            )
        ),
        s.customers.UpdateCustomerAddress(
            pb.UpdateCustomerAddressRequest(
                store_id=store_id,
                customer_id=cid,
                address_id=seeded.address_ids[0],
                address=customer_pb2.CustomerAddress(city="Back"),
                update_mask=field_mask_pb2.FieldMask(paths=["city"]),
            )
        ),
        s.customers.DeleteCustomerAddress(
            pb.DeleteCustomerAddressRequest(
                store_id=store_id, customer_id=cid, address_id=seeded.address_ids[0]
            )
        ),
        create_order(s.orders, store_id, cid),
        s.loyalty.AddLoyaltyPoints(
            lpb.AddLoyaltyPointsRequest(store_id=store_id, customer_id=cid, points=5, reason="more")
        ),
    ]
    for call in refused:
        failure = await rpc_error(call, Code.FAILED_PRECONDITION)
        assert failure.error_info.reason == "CUSTOMER_ERASED"
        assert failure.error_info.metadata["customer_id"] == str(cid)
    got = await s.customers.GetCustomer(pb.GetCustomerRequest(store_id=store_id, customer_id=cid))
    assert got.customer == erased

    # The status filter: ERASED lists it, INACTIVE and ACTIVE do not; a search
    # finds it by nothing.
    inactive = await create_customer(s.customers, store_id)
    await s.customers.SetCustomerStatus(
        pb.SetCustomerStatusRequest(
            store_id=store_id,
            customer_id=inactive.customer_id,
            status=customer_pb2.CUSTOMER_STATUS_INACTIVE,
        )
    )

    async def listed(**fields: object) -> list[int]:
        response = await s.customers.ListCustomers(
            pb.ListCustomersRequest(store_id=store_id, **fields)
        )
        return [customer.customer_id for customer in response.customers]

    assert await listed(status=customer_pb2.CUSTOMER_STATUS_ERASED) == [cid]
    assert await listed(status=customer_pb2.CUSTOMER_STATUS_INACTIVE) == [inactive.customer_id]
    assert cid not in await listed(status=customer_pb2.CUSTOMER_STATUS_ACTIVE)
    assert cid in await listed()
    assert cid not in await listed(query=str(cid))

    # Its email is free: a new customer takes it at once, and signs in with it.
    again = await create_customer(
        s.customers, store_id, email=ann.email, first_name="New", password=PASSWORD
    )
    assert again.customer_id != cid
    assert (await s.customers.AuthenticateCustomer(login)).customer == again


async def test_a_second_erasure_changes_nothing(channel, sessions, store_id):
    s = Stubs.of(channel)
    seeded = await seed_customer(s, store_id, Personal(), modules=ALL_MODULES)
    cid = seeded.customer.customer_id
    first = await erase(s, store_id, cid)
    events = await recorded(sessions, store_id)

    assert await erase(s, store_id, cid) == first
    assert await recorded(sessions, store_id) == events


async def test_a_retried_create_of_an_erased_customer_creates_nothing(channel, store_id):
    """The request_id of the erased customer's creation stays spent, its fingerprint
    (a digest of the request, email included) gone: a retry is told so, and neither
    gets the erased customer nor creates one."""
    s = Stubs.of(channel)
    request_id = str(uuid.uuid4())
    ann = Personal()
    created = await create_customer(s.customers, store_id, email=ann.email, request_id=request_id)
    await erase(s, store_id, created.customer_id)

    failure = await rpc_error(
        create_customer(s.customers, store_id, email=ann.email, request_id=request_id),
        Code.INVALID_ARGUMENT,
    )
    assert failure.violated_fields == {"request_id"}


async def test_an_erasure_stays_in_its_store(channel, sessions, store_id, other_store_id):
    """Ids are per store: the first customer of each store has the same id. Erasing
    store A's reaches none of store B's data; an id only B has is NOT_FOUND in A."""
    s = Stubs.of(channel)
    theirs = Personal()
    seeded = await seed_customer(s, other_store_id, theirs, modules=ALL_MODULES)
    cid = seeded.customer.customer_id
    async with sessions() as session:
        before = await found_in_tables(await session.connection(), other_store_id, theirs.needles())
    events = await recorded(sessions, other_store_id)

    # Store A has no customer yet: B's id is not found there.
    failure = await rpc_error(erase(s, store_id, cid), Code.NOT_FOUND)
    assert failure.resource_info.resource_name == f"stores/{store_id}/customers/{cid}"
    failure = await rpc_error(erase(s, store_id, 0), Code.INVALID_ARGUMENT)
    assert failure.violated_fields == {"customer_id"}
    # A's own customer of the same id, with orders and points of the same ids too.
    ours = await seed_customer(s, store_id, Personal(), modules=ALL_MODULES)
    assert (ours.customer.customer_id, ours.order_ids) == (cid, seeded.order_ids)
    await erase(s, store_id, cid)

    got = await s.customers.GetCustomer(
        pb.GetCustomerRequest(store_id=other_store_id, customer_id=cid)
    )
    assert got.customer.email == theirs.email
    assert got.customer.status == customer_pb2.CUSTOMER_STATUS_ACTIVE
    async with sessions() as session:
        after = await found_in_tables(await session.connection(), other_store_id, theirs.needles())
    assert after == before
    assert await recorded(sessions, other_store_id) == events
    # B's request_ids still answer their retries.
    retried = await create_customer(
        s.customers,
        other_store_id,
        request_id=seeded.request_id,
        email=theirs.email,
        first_name=theirs.first_name,
        last_name=theirs.last_name,
        phone=theirs.phone,
        preferred_language="de-AT",
        marketing_consent=True,
        password=PASSWORD,
    )
    assert retried.customer_id == cid


class LegalHold:
    """A consumer module that refuses to erase (it must keep the data for now)."""

    source = "legal_hold"

    async def erase_customer(self, uow: UnitOfWork, customer_id: int) -> None:
        raise FailedPrecondition(
            f"customer {customer_id} is under a legal hold", reason="LEGAL_HOLD"
        )


async def test_a_module_that_refuses_rolls_the_whole_erasure_back(
    settings: Settings, sessions, store_id
):
    async with serving(settings.model_copy(update={"event_relay": False})) as (app, channel):
        # Registered last: the orders' and loyalty's erasers have run when it refuses.
        app.customer_data.register_eraser(LegalHold())
        s = Stubs.of(channel)
        ann = Personal()
        seeded = await seed_customer(s, store_id, ann, modules=ALL_MODULES)
        cid = seeded.customer.customer_id
        async with sessions() as session:
            before = await found_in_tables(await session.connection(), store_id, ann.needles())
        events = await recorded(sessions, store_id)

        failure = await rpc_error(erase(s, store_id, cid), Code.FAILED_PRECONDITION)
        assert failure.error_info.reason == "LEGAL_HOLD"

        async with sessions() as session:
            assert (
                await found_in_tables(await session.connection(), store_id, ann.needles()) == before
            )
        assert await recorded(sessions, store_id) == events
        got = await s.customers.GetCustomer(
            pb.GetCustomerRequest(store_id=store_id, customer_id=cid)
        )
        assert got.customer.status == customer_pb2.CUSTOMER_STATUS_ACTIVE
        assert got.customer.email == ann.email


async def test_customers_alone_erases_its_own_data(tmp_path):
    """Mounted (and migrated) alone, customers erases what it keeps: no other module
    takes part, and none is needed."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'customers.db'}"
    store_id, tables = await migrated_store(url, ["customers"])
    assert "orders" not in tables
    settings = Settings(database_url=url, bcrypt_rounds=TEST_BCRYPT_ROUNDS)
    async with serving(settings, ["customers"]) as (_, channel):
        s = Stubs.of(channel)
        ann = Personal()
        seeded = await seed_customer(s, store_id, ann, modules=["customers"])
        needles = ann.needles(modules=["customers"])
        engine = create_engine(url, pool_size=1)
        sessions = create_session_factory(engine)
        try:
            async with sessions() as session, session.begin():
                await give_tag(
                    await session.connection(), store_id, seeded.customer.customer_id, ann.tag
                )
            async with sessions() as session:
                assert set(
                    await found_in_tables(await session.connection(), store_id, needles)
                ) == set(needles)

            erased = await erase(s, store_id, seeded.customer.customer_id)

            assert erased.status == customer_pb2.CUSTOMER_STATUS_ERASED
            async with sessions() as session:
                assert await found_in_tables(await session.connection(), store_id, needles) == {}
            reads = await read_everything(
                s, store_id, erased.customer_id, [], modules=["customers"]
            )
            assert leaks(reads, needles) == []
        finally:
            await engine.dispose()


async def test_concurrent_erasures_erase_once(channel, sessions, store_id):
    s = Stubs.of(channel)
    seeded = await seed_customer(s, store_id, Personal(), modules=ALL_MODULES)
    cid = seeded.customer.customer_id
    before = len(await recorded(sessions, store_id))

    results = await asyncio.gather(*(erase(s, store_id, cid) for _ in range(4)))

    assert len({customer.etag for customer in results}) == 1
    erased = [e for e in await recorded(sessions, store_id) if e.short_type == "CustomerErased"]
    assert len(erased) == 1
    assert len(await recorded(sessions, store_id)) == before + 1
