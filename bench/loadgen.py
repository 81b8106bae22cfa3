"""A gRPC load generator in Python for the scenarios h2load cannot drive: h2load sends
one fixed body, and some requests must differ on every call (a new customer needs a
new email) or mix several RPCs.

Several processes, each with one grpc.aio channel and `concurrency` calls in flight.
They all start at one wall-clock instant, warm up, then record each call's latency
for the measured window. Spread over processes, the generator keeps up with one
server process on the same two cores; its own CPU is not the server's (the figure of
merit is the server's CPU per request, read from /proc)."""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing
import os
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
from commerce.customers.v1 import customer_pb2
from commerce.customers.v1 import customer_service_pb2 as customers_pb
from commerce.customers.v1 import customer_service_pb2_grpc as customers_grpc
from commerce.orders.v1 import customer_order_service_pb2 as history_pb
from commerce.orders.v1 import customer_order_service_pb2_grpc as history_grpc
from commerce.orders.v1 import order_pb2
from commerce.orders.v1 import order_service_pb2 as orders_pb
from commerce.orders.v1 import order_service_pb2_grpc as orders_grpc
from google.protobuf import field_mask_pb2

Call = Callable[[], Awaitable[Any]]
# How long a load process waits for the others to start before giving up.
READY_TIMEOUT = 120.0
# The statuses an order of UpdateOrderStatus goes through, one pass of the orders each.
STATUS_PASSES = (order_pb2.ORDER_STATUS_PAID, order_pb2.ORDER_STATUS_SHIPPED)


# The mix of the "mixed_writes" scenario, each call's share (they add up to 1): 10%
# writes that move statistics, 1% statistics of the store's biggest customer.
MIXED_WRITES_SHARES = {
    "GetCustomer": 0.50,
    "GetOrder": 0.10,
    "ListCustomerOrders": 0.15,
    "GetCustomerOrderStats": 0.14,
    "GetCustomerOrderStats, the biggest customer": 0.01,
    "CreateOrder": 0.05,
    "CancelOrder": 0.05,
}


@dataclass(frozen=True)
class Plan:
    """What to send where, and when: the same for every process."""

    scenario: str
    target: str
    start_at: float  # time.time() at which every process begins its warm-up
    warmup: float
    duration: float
    concurrency: int
    # The seeded store (ids, emails: see bench.seed), and for UpdateOrderStatus and
    # mixed_writes (CancelOrder) "pending_orders": one list of PENDING order ids for
    # each process.
    data: dict[str, Any]


@dataclass
class Tally:
    """Calls that ended in the measured window: latencies of the good ones, in ms."""

    latencies_ms: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)

    async def keep_calling(
        self, next_call: Callable[[], Call | None], measure_from: float, stop_at: float
    ) -> None:
        """Makes the calls `next_call` gives (until it gives None) one after the other
        until `stop_at`, tallying those that began and ended in the measured window."""
        while (began := time.time()) < stop_at:
            call = next_call()
            if call is None:
                return
            try:
                await call()
                failed = None
            except grpc.aio.AioRpcError as error:
                failed = error.code().name
            ended = time.time()
            if began >= measure_from and ended <= stop_at:
                if failed is None:
                    self.latencies_ms.append((ended - began) * 1000)
                else:
                    self.errors[failed] = self.errors.get(failed, 0) + 1

    def add(self, other: Tally) -> None:
        self.latencies_ms += other.latencies_ms
        for code, count in other.errors.items():
            self.errors[code] = self.errors.get(code, 0) + count


def order_request(store_id: int, customer_id: int) -> orders_pb.CreateOrderRequest:
    """The order every CreateOrder scenario places: two lines, a known customer."""
    return orders_pb.CreateOrderRequest(
        store_id=store_id,
        customer_id=customer_id,
        currency_code="EUR",
        line_items=[
            order_pb2.OrderLineItem(
                sku="BENCH-1", name="Bench mug", quantity=2, unit_price_minor=1250
            ),
            order_pb2.OrderLineItem(
                sku="BENCH-2", name="Bench tea", quantity=1, unit_price_minor=499
            ),
        ],
    )


def _calls(plan: Plan, channel: grpc.aio.Channel, process: int) -> Callable[[], Call | None]:
    """A factory of the scenario's next call; None when the scenario has no more."""
    data = plan.data
    store = data["store_id"]
    customers = customers_grpc.CustomerServiceStub(channel)
    orders = orders_grpc.OrderServiceStub(channel)
    history = history_grpc.CustomerOrderServiceStub(channel)
    serial = itertools.count()
    rng = random.Random(process)  # noqa: S311 - picks customers, guards nothing

    def a_customer() -> int:
        return rng.randint(1, data["customers"])

    def create_customer() -> Call:
        # Unique across processes and runs: the email must be new every time.
        email = f"new-{data['run']}-{process}-{next(serial)}@bench.example"
        return lambda: customers.CreateCustomer(
            customers_pb.CreateCustomerRequest(
                store_id=store,
                email=email,
                first_name="Bench",
                last_name="Load",
                password="bench-pw-123",  # noqa: S106 - a benchmark customer's
            )
        )

    def get_customer() -> Call:
        request = customers_pb.GetCustomerRequest(store_id=store, customer_id=a_customer())
        return lambda: customers.GetCustomer(request)

    def update_customer() -> Call:
        request = customers_pb.UpdateCustomerRequest(
            store_id=store,
            customer_id=a_customer(),
            customer=customer_pb2.Customer(first_name=f"Bench {process}-{next(serial)}"),
            update_mask=field_mask_pb2.FieldMask(paths=["first_name"]),
        )
        return lambda: customers.UpdateCustomer(request)

    # Each order of this process's share moves one step a pass: every order has
    # become PAID before the first one is SHIPPED, so no step overtakes its forerunner.
    own_orders = data.get("pending_orders", [[]] * (process + 1))[process]
    steps = ((order, status) for status in STATUS_PASSES for order in own_orders)

    def update_order_status() -> Call | None:
        step = next(steps, None)
        if step is None:
            return None
        request = orders_pb.UpdateOrderStatusRequest(
            store_id=store, order_id=step[0], status=step[1]
        )
        return lambda: orders.UpdateOrderStatus(request)

    def mixed() -> Call:
        # A storefront's shape: mostly reads of customers and their history, some orders.
        roll = rng.random()
        if roll < 0.6:
            return get_customer()
        customer = a_customer()
        if roll < 0.75:
            return lambda: history.ListCustomerOrders(
                history_pb.ListCustomerOrdersRequest(
                    store_id=store, customer_id=customer, page_size=10
                )
            )
        if roll < 0.85:
            return lambda: history.GetCustomerOrderStats(
                history_pb.GetCustomerOrderStatsRequest(store_id=store, customer_id=customer)
            )
        return lambda: orders.CreateOrder(order_request(store, customer))

    # This process's PENDING orders for CancelOrder, each cancelled once.
    to_cancel = iter(own_orders)

    def cancel_or_create() -> Call:
        order_id = next(to_cancel, None)
        if order_id is None:  # every order dealt out is cancelled: write on with creates
            return lambda: orders.CreateOrder(order_request(store, a_customer()))
        request = orders_pb.CancelOrderRequest(
            store_id=store, order_id=order_id, reason="Changed my mind"
        )
        return lambda: orders.CancelOrder(request)

    def mixed_writes() -> Call:
        # Reads of customers, orders and statistics, and one call in ten a write that
        # moves a customer's statistics: a new order, or a pending one cancelled. A
        # small share asks for the statistics of the customer with the most orders.
        roll = rng.random()
        if roll < MIXED_WRITES_SHARES["GetCustomer"]:
            return get_customer()
        customer = a_customer()
        roll -= MIXED_WRITES_SHARES["GetCustomer"]
        if roll < MIXED_WRITES_SHARES["GetOrder"]:
            order_request_ = orders_pb.GetOrderRequest(
                store_id=store, order_id=rng.randint(1, data["orders"])
            )
            return lambda: orders.GetOrder(order_request_)
        roll -= MIXED_WRITES_SHARES["GetOrder"]
        if roll < MIXED_WRITES_SHARES["ListCustomerOrders"]:
            return lambda: history.ListCustomerOrders(
                history_pb.ListCustomerOrdersRequest(
                    store_id=store, customer_id=customer, page_size=10
                )
            )
        roll -= MIXED_WRITES_SHARES["ListCustomerOrders"]
        if roll < MIXED_WRITES_SHARES["GetCustomerOrderStats"]:
            return lambda: history.GetCustomerOrderStats(
                history_pb.GetCustomerOrderStatsRequest(store_id=store, customer_id=customer)
            )
        roll -= MIXED_WRITES_SHARES["GetCustomerOrderStats"]
        if roll < MIXED_WRITES_SHARES["GetCustomerOrderStats, the biggest customer"]:
            big = history_pb.GetCustomerOrderStatsRequest(
                store_id=store, customer_id=data["big_customer_id"]
            )
            return lambda: history.GetCustomerOrderStats(big)
        roll -= MIXED_WRITES_SHARES["GetCustomerOrderStats, the biggest customer"]
        if roll < MIXED_WRITES_SHARES["CreateOrder"]:
            return lambda: orders.CreateOrder(order_request(store, customer))
        return cancel_or_create()

    scenarios: dict[str, Callable[[], Call | None]] = {
        "create_customer": create_customer,
        "get_customer": get_customer,
        "update_customer": update_customer,
        "update_order_status": update_order_status,
        "mixed": mixed,
        "mixed_writes": mixed_writes,
    }
    return scenarios[plan.scenario]


async def _drive(plan: Plan, process: int) -> Tally:
    tally = Tally()
    measure_from = plan.start_at + plan.warmup
    stop_at = measure_from + plan.duration
    async with grpc.aio.insecure_channel(plan.target) as channel:
        next_call = _calls(plan, channel, process)
        await asyncio.sleep(max(0.0, plan.start_at - time.time()))

        await asyncio.gather(
            *(tally.keep_calling(next_call, measure_from, stop_at) for _ in range(plan.concurrency))
        )
    return tally


def _run_process(plan: Plan, process: int) -> Tally:
    return asyncio.run(_drive(plan, process))


def _arrive(ready: Any) -> None:
    """A load process's start: it has imported what it runs (this module) and waits
    until every other has too."""
    ready.wait(timeout=READY_TIMEOUT)


def _nothing(_: int) -> None:
    """A task that makes the pool start a process (each waits for all in _arrive)."""


@contextmanager
def ready_pool(processes: int) -> Iterator[ProcessPoolExecutor]:
    """`processes` load processes, each started and ready: a fresh interpreter (spawned,
    as forking would copy this process's gRPC state) takes seconds to import gRPC on a
    busy machine, so a plan's start time is set once they are, not before."""
    spawn = multiprocessing.get_context("spawn")
    ready = spawn.Barrier(processes)
    with ProcessPoolExecutor(
        processes, mp_context=spawn, initializer=_arrive, initargs=(ready,)
    ) as pool:
        # One task a process: the pool starts a process for each task it has no idle
        # process for, and none is idle before the barrier lets them all go.
        list(pool.map(_nothing, range(processes)))
        yield pool


def run(plan: Plan, processes: int, pool: ProcessPoolExecutor | None = None) -> Tally:
    """Runs the plan in `processes` processes (those of `pool`, from ready_pool, when
    given); blocks until they are done."""
    total = Tally()
    with ExitStack() as stack:
        if pool is None:
            pool = stack.enter_context(ready_pool(processes))
        for tally in pool.map(_run_process, [plan] * processes, range(processes)):
            total.add(tally)
    return total


def processes_for(cores: int | None = None) -> int:
    return max(2, cores or os.cpu_count() or 2)
