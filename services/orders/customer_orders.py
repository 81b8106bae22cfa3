"""The customer side of orders (the seed's CustomerOrderService): a customer's order
history, count and statistics, and the orders module's customer metrics provider
built on them. It lives in the orders module because orders owns the relationship;
customers never asks for it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime

from services.core.db.idempotency import erase_fingerprints
from services.core.db.unit_of_work import TenantDatabase, UnitOfWork
from services.core.domain.customer_metrics import CustomerMetric, Money
from services.core.domain.errors import InvalidArgument
from services.core.domain.pagination import PageTokenCodec, resolve_page_size
from services.customers.api import check_customer_id, get_customer
from services.orders import queries
from services.orders.events import MODULE, order_subject
from services.orders.models import OrderSnapshot, OrderStatus
from services.orders.rules import (
    CREATE_ORDER,
    CustomerOrderStats,
    OrderFilter,
    OrderPage,
    StatisticsDrift,
    cut_page,
    page_request,
)

DEFAULT_RECENT_LIMIT = 5
MAX_RECENT_LIMIT = 50
# Orders read at a time for an export: a customer's orders, however many, are never
# in memory all at once.
EXPORT_BATCH = 500


class CustomerOrderService:
    def __init__(
        self,
        database: TenantDatabase,
        page_tokens: PageTokenCodec,
        statistics: OrderMetricsProvider,
    ) -> None:
        self._db = database
        self._page_tokens = page_tokens
        self._statistics = statistics

    async def list_orders(
        self, store_id: int, customer_id: int, *, page_size: int = 0, page_token: str = ""
    ) -> OrderPage:
        """The customer's orders, newest first, one page at a time."""
        scope = {"list": "customer_orders", "store_id": store_id, "customer_id": customer_id}
        request = page_request(self._page_tokens, scope, page_size, page_token)

        async def read(uow: UnitOfWork) -> list[OrderSnapshot]:
            customer = await get_customer(uow, customer_id)
            return await queries.orders_page(
                uow, OrderFilter(customer_id=customer_id), request, customer=customer
            )

        # A list may lag a little (a customer not replicated yet is read on the primary).
        orders = await self._db.reading_stale_ok(store_id, read)
        return cut_page(self._page_tokens, request, orders)

    async def recent_orders(
        self, store_id: int, customer_id: int, limit: int = 0
    ) -> Sequence[OrderSnapshot]:
        """The customer's latest `limit` orders (0: the default of 5), newest first."""
        if limit < 0:
            raise InvalidArgument.of("limit", "must not be negative")
        size = resolve_page_size(limit, default=DEFAULT_RECENT_LIMIT, maximum=MAX_RECENT_LIMIT)
        page = await self.list_orders(store_id, customer_id, page_size=size)
        return page.orders

    async def order_count(
        self, store_id: int, customer_id: int, status: OrderStatus | None = None
    ) -> int:
        """How many orders the customer placed (with `status`, when given)."""

        async def read(uow: UnitOfWork) -> int:
            await get_customer(uow, customer_id)
            return await queries.count_customer_orders(uow, customer_id, status)

        return await self._db.reading_stale_ok(store_id, read)  # a statistic: may lag

    async def order_stats(self, store_id: int, customer_id: int) -> CustomerOrderStats:
        return await self._statistics.customer_order_stats(store_id, customer_id)


class OrderMetricsProvider:
    """The orders module's CustomerMetricsProvider (services.core.domain.customer_metrics)."""

    source = "orders"

    def __init__(self, database: TenantDatabase) -> None:
        self._db = database

    async def customer_order_stats(self, store_id: int, customer_id: int) -> CustomerOrderStats:
        check_customer_id(customer_id)

        async def read(uow: UnitOfWork) -> CustomerOrderStats:
            return await queries.customer_order_stats(uow, customer_id)

        return await self._db.reading_stale_ok(store_id, read)  # statistics: may lag

    async def customer_metrics(self, store_id: int, customer_id: int) -> list[CustomerMetric]:
        stats = await self.customer_order_stats(store_id, customer_id)
        metrics = [CustomerMetric("total_orders", "Total orders", stats.total_orders)]
        for totals in stats.currencies:
            code = totals.currency_code
            metrics += [
                CustomerMetric("total_spent", "Total spent", Money(code, totals.total_spent_minor)),
                CustomerMetric(
                    "avg_order_value",
                    "Average order value",
                    Money(code, totals.avg_order_value_minor),
                ),
            ]
        return [
            *metrics,
            CustomerMetric("first_order_time", "First order", stats.first_order_time),
            CustomerMetric("last_order_time", "Last order", stats.last_order_time),
        ]


class OrderEraser:
    """The orders module's CustomerEraser (services.core.db.customer_data): what
    EraseCustomer removes from the customer's orders, in the erasure's transaction.

    The orders stay, with their lines, totals and statuses (the customer's order
    history and statistics still add up); their personal copies go: the contact
    email and the cancel reason (free text), in the orders, in order_revisions and in
    the orders' past events, and the fingerprints of the request_ids that created
    them (digests of the requests, contact email included).

    The order's revision (its etag) is not bumped: it numbers the order's own
    changes, which order_revisions and the request_ids of status changes refer to by
    number (a retried PayOrder answers with the order at the revision it made), and
    erasure is no such change: it empties the fields at every revision at once, so
    the order at any revision reads the same, erased. Bumping would make a client
    holding the etag fail its next status change for a change that is not the
    order's, and need an event of its own; CustomerErased already tells consumers."""

    source = "orders"

    async def erase_customer(self, uow: UnitOfWork, customer_id: int) -> None:
        order_ids = await queries.erase_customer_orders(uow, customer_id)
        await erase_fingerprints(uow, CREATE_ORDER, order_ids)
        uow.redact_events(MODULE, [order_subject(order_id) for order_id in order_ids])


# Customer ids per statement of the statistics check: one range of ix_orders_customer
# and of customer_order_stats each.
CHECK_BATCH = 1_000


async def check_statistics(
    database: TenantDatabase,
    store_id: int,
    *,
    repair: bool = False,
    batch: int = CHECK_BATCH,
    found: Callable[[StatisticsDrift], None] = lambda drift: None,
) -> int:
    """Compares the store's kept order statistics with their orders', `batch`
    customer ids at a time, and tells `found` of each customer and currency that
    differ; with `repair`, makes them what the orders say, each range's in one
    transaction (what changed meanwhile is judged again under lock). Returns how many
    customers drifted. For operators, after a change to the tables by hand."""
    async with database.maintenance(transaction=False) as statements:
        highest = await queries.highest_customer_id(UnitOfWork(store_id, statements))
    drifted = 0
    for after in range(0, highest, batch):
        async with database.maintenance(transaction=False) as statements:
            uow = UnitOfWork(store_id, statements)
            drifts = await queries.statistics_drift(uow, after, after + batch)
        if drifts and repair:
            async with database.maintenance() as statements:
                uow = UnitOfWork(store_id, statements)
                drifts = [
                    drift
                    for customer_id in sorted({drift.customer_id for drift in drifts})
                    for drift in await queries.repair_statistics(uow, customer_id)
                ]
                await uow.commit()
        for drift in drifts:
            found(drift)
        drifted += len({drift.customer_id for drift in drifts})
    return drifted


async def customer_order_batches(
    uow: UnitOfWork, customer_id: int, batch: int = EXPORT_BATCH
) -> AsyncIterator[list[OrderSnapshot]]:
    """Every order of the customer with its lines (not its customer), oldest first,
    `batch` orders at a time, read in `uow` (the export's snapshot): the next batch
    is read only when the caller asks for it."""
    after: tuple[datetime, int] | None = None
    while True:
        orders = await queries.customer_orders_oldest_first(uow, customer_id, after, batch)
        if orders:
            yield orders
        if len(orders) < batch:
            return
        after = (orders[-1].created_at, orders[-1].order_id)
