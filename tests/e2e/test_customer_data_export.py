"""CustomerService.ExportCustomerData through a real server, on both databases: the
export holds exactly what the test's own calls made (an oracle built from their
answers), from the modules mounted and no other; a customer with more orders than a
batch gets them all, oldest first; nothing crosses between stores; the export reads
one snapshot; and the REST path streams it as JSON lines with the records typed."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import grpc
import pytest
from commerce.customers.v1 import customer_pb2, customer_service_pb2_grpc
from commerce.loyalty.v1 import customer_loyalty_service_pb2 as loyalty_pb
from commerce.loyalty.v1 import customer_loyalty_service_pb2_grpc, loyalty_pb2
from commerce.orders.v1 import order_pb2, order_service_pb2_grpc
from commerce.orders.v1 import order_service_pb2 as orders_pb
from google.protobuf import any_pb2, empty_pb2, field_mask_pb2
from google.protobuf.message import Message
from sqlalchemy import text

from services.core.db.customer_data import CustomerExporter, ExportedRecord
from services.core.db.unit_of_work import UnitOfWork
from services.server import Application
from tests.e2e.helpers import PASSWORD, create_customer, create_order, line, pb, serving
from tests.errors import rpc_error

RECORD_TYPES: dict[str, type[Message]] = {
    kind.DESCRIPTOR.full_name: kind
    for kind in (
        order_pb2.Order,
        loyalty_pb2.CustomerLoyalty,
        loyalty_pb2.LoyaltyMovement,
        empty_pb2.Empty,
    )
}

# A part as compared: its source and its message (a record unpacked to its own type).
Part = tuple[str, Message]


def unpacked(response: pb.ExportCustomerDataResponse) -> Part:
    kind = response.WhichOneof("part")
    assert kind is not None, response
    if kind != "record":
        return response.source, getattr(response, kind)
    record: any_pb2.Any = response.record
    prefix, _, name = record.type_url.rpartition("/")
    assert prefix == "type.googleapis.com", record.type_url
    message = RECORD_TYPES[name]()
    assert record.Unpack(message)
    return response.source, message


async def export(
    stub: customer_service_pb2_grpc.CustomerServiceStub, store_id: int, customer_id: int
) -> list[Part]:
    request = pb.ExportCustomerDataRequest(store_id=store_id, customer_id=customer_id)
    return [unpacked(response) async for response in stub.ExportCustomerData(request)]


@dataclass
class Oracle:
    """What the export must hold, from the answers of the calls that made it."""

    customer: customer_pb2.Customer
    addresses: dict[int, customer_pb2.CustomerAddress] = field(default_factory=dict)
    orders: dict[int, order_pb2.Order] = field(default_factory=dict)
    loyalty: loyalty_pb2.CustomerLoyalty | None = None
    movements: list[loyalty_pb2.LoyaltyMovement] = field(default_factory=list)

    def order(self, order: order_pb2.Order) -> None:
        """The order as its latest answer shows it, without the deprecated customer
        copy (the export begins with the customer itself)."""
        kept = order_pb2.Order()
        kept.CopyFrom(order)
        kept.ClearField("customer")
        self.orders[order.order_id] = kept

    def moved(self, movement: loyalty_pb2.LoyaltyMovement, account: Message) -> None:
        self.movements.append(movement)
        self.loyalty = account  # type: ignore[assignment]

    def parts(self, modules: Sequence[str]) -> list[Part]:
        expected: list[Part] = [("customers", self.customer)]
        expected += [("customers", self.addresses[key]) for key in sorted(self.addresses)]
        if "orders" in modules:
            oldest_first = sorted(
                self.orders.values(),
                key=lambda order: (order.create_time.ToDatetime(), order.order_id),
            )
            expected += [("orders", order) for order in oldest_first]
        if "loyalty" in modules and self.loyalty is not None:
            expected.append(("loyalty", self.loyalty))
            expected += [("loyalty", movement) for movement in self.movements]
        return expected


@dataclass
class Stubs:
    customers: customer_service_pb2_grpc.CustomerServiceStub
    orders: order_service_pb2_grpc.OrderServiceStub
    loyalty: customer_loyalty_service_pb2_grpc.CustomerLoyaltyServiceStub

    @classmethod
    def of(cls, channel: grpc.aio.Channel) -> Stubs:
        return cls(
            customer_service_pb2_grpc.CustomerServiceStub(channel),
            order_service_pb2_grpc.OrderServiceStub(channel),
            customer_loyalty_service_pb2_grpc.CustomerLoyaltyServiceStub(channel),
        )


def an_address(**fields: object) -> customer_pb2.CustomerAddress:
    values: dict[str, object] = {
        "recipient_name": "Ann Smith",
        "address_line1": "Main St 1",
        "city": "Berlin",
        "postal_code": "10115",
        "country_code": "DE",
    }
    return customer_pb2.CustomerAddress(**(values | fields))


async def a_customers_life(stubs: Stubs, store_id: int) -> Oracle:
    """A customer with a changed profile, two addresses, orders along several paths
    and a loyalty ledger; the oracle of what it leaves."""
    customer = await create_customer(
        stubs.customers, store_id, password=PASSWORD, first_name="Ann", phone="+4930123456"
    )
    updated = await stubs.customers.UpdateCustomer(
        pb.UpdateCustomerRequest(
            store_id=store_id,
            customer_id=customer.customer_id,
            customer=customer_pb2.Customer(last_name="Smith", marketing_consent=True),
            update_mask=field_mask_pb2.FieldMask(paths=["last_name", "marketing_consent"]),
        )
    )
    oracle = Oracle(updated.customer)
    customer_id = customer.customer_id
    for fields in ({"default_shipping": True}, {"city": "Hamburg", "address_line2": "3rd floor"}):
        created = await stubs.customers.CreateCustomerAddress(
            pb.CreateCustomerAddressRequest(
                store_id=store_id, customer_id=customer_id, address=an_address(**fields)
            )
        )
        oracle.addresses[created.address.address_id] = created.address
    first = next(iter(oracle.addresses.values()))
    changed = await stubs.customers.UpdateCustomerAddress(
        pb.UpdateCustomerAddressRequest(
            store_id=store_id,
            customer_id=customer_id,
            address_id=first.address_id,
            address=customer_pb2.CustomerAddress(phone="+4930999"),
            update_mask=field_mask_pb2.FieldMask(paths=["phone"]),
        )
    )
    oracle.addresses[first.address_id] = changed.address

    two_lines = [line("MUG-1", 2, 1299), line("TEE-2", 1, 2500)]
    placed = [
        await create_order(stubs.orders, store_id, customer_id, line_items=two_lines),
        await create_order(stubs.orders, store_id, customer_id, contact_email="ann@example.com"),
        await create_order(stubs.orders, store_id, customer_id, currency_code="USD"),
    ]
    for order in placed:
        oracle.order(order)
    paid = await stubs.orders.PayOrder(
        orders_pb.PayOrderRequest(store_id=store_id, order_id=placed[0].order_id)
    )
    shipped = await stubs.orders.ShipOrder(
        orders_pb.ShipOrderRequest(
            store_id=store_id, order_id=paid.order.order_id, tracking_reference="TRACK-1"
        )
    )
    cancelled = await stubs.orders.CancelOrder(
        orders_pb.CancelOrderRequest(
            store_id=store_id, order_id=placed[1].order_id, reason="changed my mind"
        )
    )
    oracle.order(shipped.order)
    oracle.order(cancelled.order)

    for points, redeem in ((500, False), (120, True), (80, False)):
        kind = (
            loyalty_pb.RedeemLoyaltyPointsRequest if redeem else loyalty_pb.AddLoyaltyPointsRequest
        )
        request = kind(
            store_id=store_id,
            customer_id=customer_id,
            points=points,
            reason="a mug" if redeem else "welcome",
            request_id=str(uuid.uuid4()),
        )
        call = stubs.loyalty.RedeemLoyaltyPoints if redeem else stubs.loyalty.AddLoyaltyPoints
        moved = await call(request)  # type: ignore[operator]
        oracle.moved(moved.movement, moved.loyalty)
    return oracle


SUBSETS = [
    ["customers"],
    ["customers", "orders"],
    ["customers", "loyalty"],
    ["customers", "orders", "loyalty"],
]


@pytest.mark.parametrize("modules", SUBSETS, ids="+".join)
async def test_the_export_holds_exactly_what_the_calls_made_from_the_modules_mounted(
    settings, channel, sessions, store_id, modules
):
    # Every module's data is there (made through the server of all modules); a
    # server of `modules` alone exports only theirs.
    oracle = await a_customers_life(Stubs.of(channel), store_id)
    async with serving(settings, modules) as (_, subset):
        stub = customer_service_pb2_grpc.CustomerServiceStub(subset)
        exported = await export(stub, store_id, oracle.customer.customer_id)
    assert exported == oracle.parts(modules)
    # A password was set; neither it nor its hash is anywhere in the export.
    async with sessions() as session:
        hashed = await session.scalar(
            text("SELECT hashed_password FROM customers WHERE store_id = :s AND customer_id = :c"),
            {"s": store_id, "c": oracle.customer.customer_id},
        )
    assert hashed
    assert oracle.customer.has_password
    for _, message in exported:
        wire = message.SerializeToString()
        assert hashed.encode() not in wire
        assert PASSWORD.encode() not in wire


async def test_a_customer_without_orders_or_points_exports_the_profile_alone(customers, store_id):
    customer = await create_customer(customers, store_id)
    assert await export(customers, store_id, customer.customer_id) == [("customers", customer)]


async def test_a_customer_with_more_orders_than_a_batch_gets_them_all_oldest_first(
    channel, store_id
):
    stubs = Stubs.of(channel)
    customer = await create_customer(stubs.customers, store_id)
    oracle = Oracle(customer)
    total = 1_200  # more than two batches of the orders exporter (500)

    async def place(index: int) -> None:
        lines = [line(f"SKU-{index}", 1 + index % 3, 100 + index)]
        oracle.order(
            await create_order(stubs.orders, store_id, customer.customer_id, line_items=lines)
        )

    for start in range(0, total, 50):
        await asyncio.gather(*(place(index) for index in range(start, start + 50)))
    exported = await export(stubs.customers, store_id, customer.customer_id)
    assert len(exported) == 1 + total
    assert exported == oracle.parts(["customers", "orders"])


async def test_one_store_never_exports_another_stores_data(channel, store_id, other_store_id):
    stubs = Stubs.of(channel)
    # Customer ids are per store: each fresh store's first customer has the same id,
    # with its own addresses, orders and points.
    mine = await a_customers_life(stubs, store_id)
    theirs = await a_customers_life(stubs, other_store_id)
    same_id = mine.customer.customer_id
    assert theirs.customer.customer_id == same_id
    everything = ["customers", "orders", "loyalty"]
    assert await export(stubs.customers, store_id, same_id) == mine.parts(everything)
    assert await export(stubs.customers, other_store_id, same_id) == theirs.parts(everything)
    # A customer only the other store has is not found, before any part.
    only_theirs = await a_customers_life(stubs, other_store_id)
    missing = only_theirs.customer.customer_id
    failure = await rpc_error(export(stubs.customers, store_id, missing), grpc.StatusCode.NOT_FOUND)
    assert failure.resource_info is not None
    assert failure.resource_info.resource_name == f"stores/{store_id}/customers/{missing}"


async def test_bad_requests_fail_before_any_part(customers, store_id):
    await rpc_error(export(customers, store_id, 0), grpc.StatusCode.INVALID_ARGUMENT)
    await rpc_error(export(customers, store_id, -3), grpc.StatusCode.INVALID_ARGUMENT)
    await rpc_error(export(customers, store_id, 2**62), grpc.StatusCode.NOT_FOUND)
    await rpc_error(export(customers, 2**62, 1), grpc.StatusCode.NOT_FOUND)


class PausingExporter:
    """A module's exporter that sends one record and then waits, inside the export's
    snapshot, until the test lets it go on."""

    source = "pause"

    def __init__(self) -> None:
        self.reached = asyncio.Event()
        self.go_on = asyncio.Event()
        # One item per export that reached the pause.
        self.paused: asyncio.Queue[None] = asyncio.Queue()

    async def export_customer(
        self, uow: UnitOfWork, customer_id: int
    ) -> AsyncIterator[ExportedRecord]:
        yield ExportedRecord(empty_pb2.Empty.DESCRIPTOR.full_name, b"")
        self.reached.set()
        self.paused.put_nowait(None)
        await self.go_on.wait()


@asynccontextmanager
async def serving_with(settings, exporter: CustomerExporter) -> AsyncIterator[grpc.aio.Channel]:
    """A server of every module whose first exporter is `exporter` (mounted modules
    register theirs after it)."""
    app = Application(settings)
    app.customer_data.register_exporter(exporter)
    port = await app.start("127.0.0.1:0")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield channel
    finally:
        await app.stop(grace=0)


async def test_the_export_reads_one_snapshot(settings, channel, store_id):
    # Changes made (through another server, another connection) while the export is
    # paused in the middle are not in it: neither the new order nor the new points,
    # read after the pause, nor the changed profile, read before it.
    stubs = Stubs.of(channel)
    oracle = await a_customers_life(stubs, store_id)
    customer_id = oracle.customer.customer_id
    pausing = PausingExporter()
    async with serving_with(settings, pausing) as paused_channel:
        paused = customer_service_pb2_grpc.CustomerServiceStub(paused_channel)
        exporting = asyncio.ensure_future(export(paused, store_id, customer_id))
        await pausing.reached.wait()
        await create_order(stubs.orders, store_id, customer_id)
        await stubs.loyalty.AddLoyaltyPoints(
            loyalty_pb.AddLoyaltyPointsRequest(
                store_id=store_id, customer_id=customer_id, points=7, reason="meanwhile"
            )
        )
        await stubs.customers.UpdateCustomer(
            pb.UpdateCustomerRequest(
                store_id=store_id,
                customer_id=customer_id,
                customer=customer_pb2.Customer(first_name="Changed"),
                update_mask=field_mask_pb2.FieldMask(paths=["first_name"]),
            )
        )
        pausing.go_on.set()
        exported = await exporting
    expected = oracle.parts(["customers", "orders", "loyalty"])
    paused_part = ("pause", empty_pb2.Empty())
    at = 1 + len(oracle.addresses)
    assert exported == [*expected[:at], paused_part, *expected[at:]]
    # The next export sees the changes.
    after = await export(stubs.customers, store_id, customer_id)
    assert len(after) == len(expected) + 2
    assert after[0][1].first_name == "Changed"  # type: ignore[attr-defined]


class FloodingExporter:
    """A module's exporter with more to send than a caller that stops reading takes:
    the server waits in its writes, inside the snapshot."""

    source = "flood"
    RECORDS = 2_000
    RECORD = b"x" * 65_536

    async def export_customer(
        self, uow: UnitOfWork, customer_id: int
    ) -> AsyncIterator[ExportedRecord]:
        for _ in range(self.RECORDS):
            yield ExportedRecord(empty_pb2.Empty.DESCRIPTOR.full_name, self.RECORD)


async def test_an_export_its_caller_abandons_gives_its_connection_back(
    settings, backend, customers, store_id, caplog
):
    # More abandoned exports than the server has connections, each hung up inside its
    # snapshot: the server goes on serving. On PostgreSQL each is hung up while the
    # server waits to send (the caller stopped reading), which must end the snapshot.
    # On SQLite, whose one connection must not be cancelled midway, the export is
    # read whole before it is sent: each is hung up while paused in that read, which
    # runs to its end once it can and then gives the connection back.
    customer = await create_customer(customers, store_id)
    pausing = PausingExporter()
    flooding = settings.model_copy(update={"db_pool_size": 2})
    exporter = pausing if backend == "sqlite" else FloodingExporter()
    async with serving_with(flooding, exporter) as exporting_channel:
        stub = customer_service_pb2_grpc.CustomerServiceStub(exporting_channel)
        request = pb.ExportCustomerDataRequest(store_id=store_id, customer_id=customer.customer_id)
        for _ in range(3 * flooding.db_pool_size):
            if backend == "sqlite":
                call = stub.ExportCustomerData(request)
                await pausing.paused.get()
            else:
                call = await _admitted_export(stub, request)
            call.cancel()
            pausing.go_on.set()
            answer = await stub.GetCustomer(
                pb.GetCustomerRequest(store_id=store_id, customer_id=customer.customer_id),
                timeout=15,
            )
            assert answer.customer == customer
            pausing.go_on.clear()
    # A hang-up is the caller's doing, not an error of the server's.
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


async def _admitted_export(
    stub: customer_service_pb2_grpc.CustomerServiceStub, request: pb.ExportCustomerDataRequest
) -> grpc.aio.UnaryStreamCall:
    """An export whose first part arrived. With a pool of two, one export at a time
    is admitted: the one hung up just before may still hold its place while the
    server notices the hang-up, and the next is refused (RESOURCE_EXHAUSTED) until it
    gives the place back, which must happen within seconds."""
    deadline = asyncio.get_running_loop().time() + 15
    while True:
        call = stub.ExportCustomerData(request)
        try:
            first = await call.read()
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise
            assert asyncio.get_running_loop().time() < deadline, "the export's place stays taken"
            await asyncio.sleep(0.05)
            continue
        assert first.source == "customers"
        return call


class BlockingExporter:
    """A module's exporter whose second record is more than a caller that stopped
    reading lets the server send: the server is inside that write when `sending` is
    set (nothing suspends it between the yield and the write)."""

    source = "block"
    RECORD = b"x" * 3_000_000

    def __init__(self) -> None:
        self.sending: asyncio.Queue[None] = asyncio.Queue()

    async def export_customer(
        self, uow: UnitOfWork, customer_id: int
    ) -> AsyncIterator[ExportedRecord]:
        for _ in range(3):
            self.sending.put_nowait(None)
            yield ExportedRecord(empty_pb2.Empty.DESCRIPTOR.full_name, self.RECORD)


async def test_a_caller_that_hangs_up_while_a_part_is_being_sent_is_no_server_error(
    settings, customers, store_id, caplog
):
    customer = await create_customer(customers, store_id)
    blocking = BlockingExporter()
    async with serving_with(settings, blocking) as exporting_channel:
        stub = customer_service_pb2_grpc.CustomerServiceStub(exporting_channel)
        request = pb.ExportCustomerDataRequest(store_id=store_id, customer_id=customer.customer_id)
        for _ in range(3):
            call = stub.ExportCustomerData(request)
            assert (await call.read()).source == "customers"
            for _ in range(2):  # the first big record and the one after it
                await blocking.sending.get()
            call.cancel()
            # The server noticed: it serves the next call, and logged no error.
            await stub.GetCustomer(
                pb.GetCustomerRequest(store_id=store_id, customer_id=customer.customer_id)
            )
            while not blocking.sending.empty():
                blocking.sending.get_nowait()
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


async def _curl(*arguments: str) -> bytes:
    process = await asyncio.create_subprocess_exec(
        "curl", "-sS", "--max-time", "60", *arguments, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await process.communicate()
    return out


async def test_the_rest_path_streams_the_export_as_json_lines(settings, channel, store_id):
    oracle = await a_customers_life(Stubs.of(channel), store_id)
    customer_id = oracle.customer.customer_id
    served = settings.model_copy(
        update={"event_relay": False, "http_listen_address": "127.0.0.1:0"}
    )
    async with serving(served) as (app, _):
        base = f"http://127.0.0.1:{app.http_port}/v1/stores/{store_id}/customers"
        body = await _curl(f"{base}/{customer_id}:exportData")
        missing = await _curl("-o", "/dev/null", "-w", "%{http_code}", f"{base}/999999:exportData")
    lines = [json.loads(text_line) for text_line in body.decode().splitlines()]
    expected = oracle.parts(["customers", "orders", "loyalty"])
    assert len(lines) == len(expected)
    assert set(lines[0]) == {"source", "customer"}
    assert lines[0]["customer"]["customerId"] == str(customer_id)
    assert [line_["source"] for line_ in lines] == [source for source, _ in expected]
    records = [line_["record"] for line_ in lines if "record" in line_]
    # Each record in JSON as its own type, named by @type.
    assert [record["@type"] for record in records] == [
        f"type.googleapis.com/{message.DESCRIPTOR.full_name}"
        for source, message in expected
        if source != "customers"
    ]
    assert records[0]["orderId"] == str(next(iter(sorted(oracle.orders))))
    assert records[-1]["reason"] == "welcome"
    assert missing == b"404"
