"""The bare baseline of the benchmark: the cheapest server that does the same work.

It serves twelve RPCs of the real server with the same generated protobuf messages and
the same SQL statements, but through nothing except grpc.aio and an asyncpg pool:
no SQLAlchemy, no interceptors, no per-call logging, no metrics. Measuring both under
the same load shows what the real server's layers cost on top of the unavoidable
work (HTTP/2 and protobuf, the database round trips, bcrypt).

  commerce.customers.v1.CustomerService    GetCustomer, ListCustomers, UpdateCustomer,
                                           AuthenticateCustomer, CreateCustomer
  commerce.orders.v1.OrderService          CreateOrder, GetOrder, ListOrders,
                                           UpdateOrderStatus, CancelOrder
  commerce.orders.v1.CustomerOrderService  GetCustomerOrderStats, ListCustomerOrders

Every other method of these services is UNIMPLEMENTED. The responses fill the same
fields as the real servicers (services/customers/servicer.py customer_to_proto,
services/orders/servicer.py order_to_proto and stats_to_proto), so the wire work is
the same. Page tokens come from the real PageTokenCodec with the real scopes: with the
same secret, a token of one server pages on the other.

What it skips, and why the comparison stays fair:

- The store check. The real server asks whether the store is active at most once per
  store every 5 seconds (services/core/tenancy.py StoreStatusCache); under load that
  is a dictionary lookup per call and a query every 5 s, i.e. next to nothing.
- The deadline bound of transactions (services/core/tenancy.py _bound_by_deadline):
  one extra statement per write, only when the caller sends a deadline. Send none to
  the real server and both run the same statements.
- request_id idempotency (services/core/idempotency.py): ignored here, so a bench
  comparing the two must create without request_id, as the real server then does no
  idempotency work either.
- Input validation and normalization (email syntax, language tags, lengths, currency
  codes, quantities): requests are taken as valid. Send valid, already normalized
  values (lower-case email domains, canonical language tags) and both servers store
  and return the same thing. Text fields are still stripped and the currency code
  upper-cased, as the real server does.
- Error details: failures are a bare status (NOT_FOUND, UNAUTHENTICATED, ...)
  without the real server's google.rpc details; the benchmark measures successes.
- AuthenticateCustomer fails at once, without a decoy bcrypt check, when the email
  is unknown, the customer inactive or without a password. The real server spends
  one check whatever the failure; successful logins cost the same on both.
- ListCustomers serves only the unfiltered listing (status and query unset); a
  filter is UNIMPLEMENTED here.
- UpdateCustomer changes the first name only (the benchmark's update), and takes
  no etag.
- ListOrders serves only the unfiltered listing of the store's orders; a filter is
  UNIMPLEMENTED here. CancelOrder takes no etag and no request_id.
- Order statistics are aggregated from the orders on every GetCustomerOrderStats,
  as the real server first did: the baseline keeps no table of them, so its order
  changes write less and its statistics read more.

Run it on a migrated database beside, or instead of, the real server:

  python -m bench.baseline --database-url postgresql://postgres@127.0.0.1:5432/DB \\
      --listen-address 127.0.0.1:50061 [--pool-size 10] [--bcrypt-rounds 12] \\
      [--page-token-secret S]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, Never, Protocol, TypeAlias, TypeVar

# Typed by asyncpg-stubs when installed; without them asyncpg is Any, and still runs.
import asyncpg  # type: ignore[import-untyped, unused-ignore]
import bcrypt
import grpc
from commerce.customers.v1 import customer_pb2, customer_service_pb2
from commerce.orders.v1 import customer_order_service_pb2, order_pb2, order_service_pb2
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message

from bench.urls import asyncpg_dsn

# The real codec and page sizes, so tokens and page lengths are the real server's.
# Neither module imports SQLAlchemy.
from services.core.domain.errors import InvalidArgument
from services.core.domain.pagination import PageTokenCodec, resolve_page_size
from services.core.rpc.convert import timestamp  # the suite's own conversion

Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
Pool: TypeAlias = "asyncpg.Pool[asyncpg.Record]"
PoolConnection: TypeAlias = "asyncpg.pool.PoolConnectionProxy[asyncpg.Record]"


class Row(Protocol):
    """A row read by column name: an asyncpg Record, or a dict of the same columns
    for a row this server has just written."""

    def __getitem__(self, column: str, /) -> Any: ...


T = TypeVar("T")

# Mirrors services/customers/service.py and services/orders/service.py; not imported
# from there because those modules load SQLAlchemy and the models.
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
CUSTOMER_COUNTER = "customer"
ORDER_COUNTER = "order"
PENDING = "pending"
CANCELLED = "cancelled"
# services/orders: which status may follow which (DELIVERED and CANCELLED are final).
_TRANSITIONS = {
    "pending": ("paid", "cancelled"),
    "paid": ("shipped", "cancelled"),
    "shipped": ("delivered",),
}

# asyncpg's defaults retire a connection after 50,000 queries or 300 s idle; the real
# server's SQLAlchemy pool does neither (it renews a connection only once it is an
# hour old), and reconnecting mid-run would be a cost only the baseline pays.
MAX_QUERIES_PER_CONNECTION = 2**62
NO_IDLE_LIMIT = 0.0
# How long shutdown waits for the pool to close its connections politely.
POOL_CLOSE_SECONDS = 5.0

_ORDER_STATUS: dict[str, order_pb2.OrderStatus.ValueType] = {
    status: order_pb2.OrderStatus.Value(f"ORDER_STATUS_{status.upper()}")
    for status in ("pending", "paid", "shipped", "delivered", "cancelled")
}

# -- SQL ------------------------------------------------------------------------------
# The statements the real server sends (as SQLAlchemy logs them), column for column;
# without SQLAlchemy's ::TYPE casts except where PostgreSQL cannot infer a type.

_CUSTOMER_COLUMNS = (
    " store_id, customer_id, customer_number, email, email_key, hashed_password,"
    " first_name, last_name, phone, marketing_consent, preferred_language, is_active,"
    " revision, created_at, updated_at"
)
_CUSTOMER_ROW = "SELECT" + _CUSTOMER_COLUMNS + " FROM customers"
GET_CUSTOMER = _CUSTOMER_ROW + " WHERE store_id = $1 AND customer_id = $2"
# CreateOrder holds the customer as it is until the order referencing it commits.
SHARE_CUSTOMER = GET_CUSTOMER + " FOR SHARE"
# UpdateCustomer locks the row, so the etag check and the change are one step.
LOCK_CUSTOMER = GET_CUSTOMER + " FOR UPDATE"
RENAME_CUSTOMER = (
    "UPDATE customers SET first_name = $3, updated_at = $4, revision = revision + 1"  # noqa: S608 - fixed text
    " WHERE store_id = $1 AND customer_id = $2 RETURNING" + _CUSTOMER_COLUMNS
)
CUSTOMER_BY_EMAIL_KEY = _CUSTOMER_ROW + " WHERE store_id = $1 AND email_key = $2"
LIST_CUSTOMERS = (
    _CUSTOMER_ROW + " WHERE store_id = $1 AND customer_id > $2 ORDER BY customer_id LIMIT $3"
)
EMAIL_KEY_TAKEN = "SELECT customer_id FROM customers WHERE store_id = $1 AND email_key = $2"
# services/core/stores.py next_store_number: the row stays locked to the end of the
# transaction, so numbers are distinct and gap-free.
NEXT_STORE_NUMBER = (
    "INSERT INTO store_counters (store_id, name, value) VALUES ($1, $2, 1)"
    " ON CONFLICT (store_id, name) DO UPDATE SET value = store_counters.value + 1"
    " RETURNING value"
)
INSERT_CUSTOMER = (
    "INSERT INTO customers (store_id, customer_id, customer_number, email, email_key,"
    " hashed_password, first_name, last_name, phone, marketing_consent,"
    " preferred_language, is_active, revision, created_at, updated_at)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
)
INSERT_ORDER = (
    "INSERT INTO orders (store_id, order_id, order_number, customer_id, status,"
    " currency_code, total_minor, contact_email, created_at, updated_at)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
)
INSERT_LINE_ITEM = (
    "INSERT INTO order_line_items (store_id, order_id, line_number, sku, name, quantity,"
    " unit_price_minor, line_total_minor) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
)
_ORDER_COLUMNS = (
    " store_id, order_id, order_number, customer_id, status, currency_code,"
    " total_minor, contact_email, created_at, updated_at, revision, cancel_reason"
)
_ORDER_ROW = "SELECT" + _ORDER_COLUMNS + " FROM orders WHERE store_id = $1 AND customer_id = $2"
GET_ORDER = "SELECT" + _ORDER_COLUMNS + " FROM orders WHERE store_id = $1 AND order_id = $2"
ORDER_LINE_ITEMS = (
    "SELECT store_id, order_id, line_number, sku, name, quantity, unit_price_minor,"
    " line_total_minor FROM order_line_items WHERE store_id = $1 AND order_id = $2"
    " ORDER BY line_number"
)
# services/orders/queries.py _move_order: one conditional UPDATE, the transition
# checked and made atomically, the revision counted up. Into a status more than one
# status may precede (CANCELLED), PostgreSQL joins the order's row as locked, to
# return the status the order came from.
MOVE_ORDER = (
    "UPDATE orders SET status = $3, updated_at = $4,"  # noqa: S608 - fixed text
    " revision = orders.revision + 1 WHERE store_id = $1 AND order_id = $2"
    " AND status = ANY($5::varchar[]) RETURNING" + _ORDER_COLUMNS
)
CANCEL_ORDER = (
    "UPDATE orders SET status = 'cancelled', updated_at = $3,"  # noqa: S608 - fixed text
    " revision = orders.revision + 1, cancel_reason = $4"
    " FROM (SELECT locked_order.order_id AS locked_order_id, locked_order.status AS old_status"
    " FROM orders AS locked_order WHERE locked_order.store_id = $1"
    " AND locked_order.order_id = $2 FOR UPDATE) AS locked"
    " WHERE orders.store_id = $1 AND orders.order_id = $2"
    " AND (orders.status = 'pending' OR orders.status = 'paid')"
    " AND orders.order_id = locked.locked_order_id RETURNING"
    + _ORDER_COLUMNS
    + ", locked.old_status"
)
# What a status change left: the row a request_id's retry answers from.
INSERT_REVISION = (
    "INSERT INTO order_revisions (store_id, order_id, revision, status,"
    " tracking_reference, cancel_reason, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7)"
)
_NEWEST_FIRST = " ORDER BY created_at DESC, order_id DESC"
CUSTOMER_ORDERS = _ORDER_ROW + _NEWEST_FIRST + " LIMIT $3"
# The keyset of services/orders/service.py newest_first_page: strictly older than the
# last row of the previous page, ties on created_at broken by order_id.
CUSTOMER_ORDERS_AFTER = (
    _ORDER_ROW
    + " AND (created_at, order_id) < ($3::timestamptz, $4::bigint)"
    + _NEWEST_FIRST
    + " LIMIT $5"
)
# services/orders/queries.py orders_page without filters: the store's orders newest
# first by the keyset (created_at, order_id); then the page's lines and customers by
# the page's own keys, each key a probe of its index (rows_of_keys).
STORE_ORDERS = (
    "SELECT" + _ORDER_COLUMNS + " FROM orders WHERE store_id = $1" + _NEWEST_FIRST + " LIMIT $2"
)
STORE_ORDERS_AFTER = (
    "SELECT" + _ORDER_COLUMNS + " FROM orders WHERE store_id = $1"
    " AND ($2::timestamptz, $3::bigint) > (created_at, order_id)" + _NEWEST_FIRST + " LIMIT $4"
)
LINES_OF_ORDERS = (
    "SELECT found.* FROM unnest($1::bigint[]) AS wanted(order_id) JOIN LATERAL"
    " (SELECT store_id, order_id, line_number, sku, name, quantity, unit_price_minor,"
    " line_total_minor FROM order_line_items WHERE store_id = $2"
    " AND order_id = wanted.order_id OFFSET 0) AS found ON true"
    " ORDER BY found.order_id, found.line_number"
)
CUSTOMERS_OF_KEYS = (
    "SELECT found.* FROM unnest($1::bigint[]) AS wanted(customer_id) JOIN LATERAL"  # noqa: S608 - fixed text
    " (SELECT" + _CUSTOMER_COLUMNS + " FROM customers WHERE store_id = $2"
    " AND customer_id = wanted.customer_id OFFSET 0) AS found ON true"
)
# services/orders/statistics.py: the customer LEFT JOIN its counted orders,
# aggregated per currency in a subquery. No row: no such customer; one row with a
# NULL currency: no orders.
CUSTOMER_ORDER_STATS = (
    "SELECT anon_1.currency_code, anon_1.count_1, anon_1.sum_1, anon_1.min_1, anon_1.max_1"
    " FROM customers LEFT OUTER JOIN (SELECT orders.currency_code AS currency_code,"
    " count(orders.order_id) AS count_1, sum(orders.total_minor) AS sum_1,"
    " min(orders.created_at) AS min_1, max(orders.created_at) AS max_1 FROM orders"
    " WHERE orders.store_id = $2 AND orders.customer_id = $3 AND orders.status != $1"
    " GROUP BY orders.currency_code) AS anon_1 ON true"
    " WHERE customers.store_id = $2 AND customers.customer_id = $3"
    " ORDER BY anon_1.currency_code"
)


# services/orders/customer_orders.py: the lines of the customer's orders between the
# newest and the oldest order of a page, both included.
PAGE_LINE_ITEMS = (
    "SELECT l.store_id, l.order_id, l.line_number, l.sku, l.name, l.quantity,"
    " l.unit_price_minor, l.line_total_minor FROM order_line_items AS l"
    " JOIN orders AS o ON o.store_id = l.store_id AND o.order_id = l.order_id"
    " WHERE o.store_id = $1 AND o.customer_id = $2"
    " AND (o.created_at, o.order_id) <= ($3::timestamptz, $4::bigint)"
    " AND (o.created_at, o.order_id) >= ($5::timestamptz, $6::bigint)"
    " ORDER BY l.order_id, l.line_number"
)


# -- asyncpg ------------------------------------------------------------------------


async def keep_session(connection: asyncpg.Connection[asyncpg.Record]) -> None:
    """The pool's reset on release, which does nothing. asyncpg's default resets the
    session (RESET ALL, UNLISTEN, ...) in one more round trip per call; this server
    changes no session state, and the real server's pool sends nothing either. An
    unfinished transaction is still rolled back by asyncpg before this runs."""


# -- protobuf -------------------------------------------------------------------------


def customer_number(customer_id: int) -> str:
    return f"C-{customer_id:06d}"


def order_number(order_id: int) -> str:
    return f"O-{order_id:06d}"


def customer_to_proto(row: Row) -> customer_pb2.Customer:
    return customer_pb2.Customer(
        store_id=row["store_id"],
        customer_id=row["customer_id"],
        customer_number=row["customer_number"],
        email=row["email"],
        first_name=row["first_name"],
        last_name=row["last_name"],
        phone=row["phone"],
        marketing_consent=row["marketing_consent"],
        preferred_language=row["preferred_language"],
        status=customer_pb2.CUSTOMER_STATUS_ACTIVE
        if row["is_active"]
        else customer_pb2.CUSTOMER_STATUS_INACTIVE,
        has_password=row["hashed_password"] is not None,
        create_time=timestamp(row["created_at"]),
        update_time=timestamp(row["updated_at"]),
        etag=f"r{row['revision']}",
    )


def line_to_proto(line: Row) -> order_pb2.OrderLineItem:
    return order_pb2.OrderLineItem(
        line_number=line["line_number"],
        sku=line["sku"],
        name=line["name"],
        quantity=line["quantity"],
        unit_price_minor=line["unit_price_minor"],
        line_total_minor=line["line_total_minor"],
    )


def order_to_proto(
    order: Row, lines: Iterable[Row], customer: customer_pb2.Customer | None
) -> order_pb2.Order:
    return order_pb2.Order(
        store_id=order["store_id"],
        order_id=order["order_id"],
        order_number=order["order_number"],
        customer_id=order["customer_id"] or 0,
        customer=customer,
        status=_ORDER_STATUS[order["status"]],
        currency_code=order["currency_code"],
        line_items=[line_to_proto(line) for line in lines],
        total_minor=order["total_minor"],
        contact_email=order["contact_email"],
        create_time=timestamp(order["created_at"]),
        update_time=timestamp(order["updated_at"]),
    )


def stats_to_proto(
    store_id: int, customer_id: int, rows: Sequence[Row]
) -> order_pb2.CustomerOrderStats:
    """services/orders/statistics.py and stats_to_proto in one; `rows` are the
    aggregate's rows with a currency (none: a customer without counted orders)."""
    # sum(bigint) is numeric in PostgreSQL: back to int, exactly.
    totals = [(row["currency_code"], row["count_1"], int(row["sum_1"])) for row in rows]
    return order_pb2.CustomerOrderStats(
        store_id=store_id,
        customer_id=customer_id,
        total_orders=sum(count for _, count, _ in totals),
        total_spent=[
            order_pb2.Money(currency_code=code, amount_minor=spent) for code, _, spent in totals
        ],
        # The mean rounded half up in integer arithmetic, as CurrencyTotals does it.
        avg_order_value=[
            order_pb2.Money(currency_code=code, amount_minor=(2 * spent + count) // (2 * count))
            for code, count, spent in totals
        ],
        first_order_time=timestamp(min(row["min_1"] for row in rows)) if rows else None,
        last_order_time=timestamp(max(row["max_1"] for row in rows)) if rows else None,
    )


# -- the servicer ---------------------------------------------------------------------


class Baseline:
    """The twelve RPCs, each straight from request to SQL to response."""

    def __init__(
        self,
        pool: Pool,
        page_tokens: PageTokenCodec,
        bcrypt_rounds: int,
        bcrypt_threads: ThreadPoolExecutor,
    ) -> None:
        self._pool = pool
        self._page_tokens = page_tokens
        self._rounds = bcrypt_rounds
        self._bcrypt = bcrypt_threads

    # -- CustomerService ------------------------------------------------------------

    async def GetCustomer(
        self, request: customer_service_pb2.GetCustomerRequest, context: Context
    ) -> customer_service_pb2.GetCustomerResponse:
        async with self._pool.acquire() as connection:
            row = await connection.fetchrow(GET_CUSTOMER, request.store_id, request.customer_id)
        if row is None:
            await _customer_not_found(context, request.customer_id)
        return customer_service_pb2.GetCustomerResponse(customer=customer_to_proto(row))

    async def ListCustomers(
        self, request: customer_service_pb2.ListCustomersRequest, context: Context
    ) -> customer_service_pb2.ListCustomersResponse:
        if request.status != customer_pb2.CUSTOMER_STATUS_UNSPECIFIED or request.query:
            await context.abort(
                grpc.StatusCode.UNIMPLEMENTED, "the baseline lists customers unfiltered only"
            )
        # The real service's scope of an unfiltered listing, so tokens are interchangeable.
        scope = {"list": "customers", "store_id": request.store_id, "active": None, "query": ""}
        size, position = await _page(context, self._page_tokens, request, scope)
        after_id = position[0] if position else 0
        async with self._pool.acquire() as connection:
            rows = await connection.fetch(LIST_CUSTOMERS, request.store_id, after_id, size + 1)
        page, token = self._page_tokens.cut(rows, size, scope, lambda last: [last["customer_id"]])
        return customer_service_pb2.ListCustomersResponse(
            customers=[customer_to_proto(row) for row in page], next_page_token=token
        )

    async def AuthenticateCustomer(
        self, request: customer_service_pb2.AuthenticateCustomerRequest, context: Context
    ) -> customer_service_pb2.AuthenticateCustomerResponse:
        email_key = request.email.strip().lower()
        async with self._pool.acquire() as connection:
            row = await connection.fetchrow(CUSTOMER_BY_EMAIL_KEY, request.store_id, email_key)
        if (
            row is None
            or row["hashed_password"] is None
            or not row["is_active"]
            or not await self._password_matches(request.password, row["hashed_password"])
        ):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "invalid email or password")
        return customer_service_pb2.AuthenticateCustomerResponse(customer=customer_to_proto(row))

    async def CreateCustomer(
        self, request: customer_service_pb2.CreateCustomerRequest, context: Context
    ) -> customer_service_pb2.CreateCustomerResponse:
        store_id = request.store_id
        hashed_password: str | None = None
        if request.password:
            try:
                # Before the transaction, as the real server does: no connection is
                # held while bcrypt runs.
                hashed_password = await self._hash_password(request.password)
            except ValueError:  # bcrypt 5 refuses more than 72 bytes
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "password too long")
        email_key = request.email.lower()
        try:
            async with self._pool.acquire() as connection, connection.transaction():
                if await connection.fetchval(EMAIL_KEY_TAKEN, store_id, email_key) is not None:
                    await _email_taken(context)
                # Late in the transaction, so the counter row is locked briefly; the
                # time is taken under that lock, so numbers and create times agree.
                customer_id = await connection.fetchval(
                    NEXT_STORE_NUMBER, store_id, CUSTOMER_COUNTER
                )
                now = datetime.now(UTC)
                customer: dict[str, Any] = {
                    "store_id": store_id,
                    "customer_id": customer_id,
                    "customer_number": customer_number(customer_id),
                    "email": request.email,
                    "email_key": email_key,
                    "hashed_password": hashed_password,
                    "first_name": request.first_name.strip(),
                    "last_name": request.last_name.strip(),
                    "phone": request.phone.strip(),
                    "marketing_consent": request.marketing_consent,
                    "preferred_language": request.preferred_language,
                    "is_active": True,
                    "revision": 1,
                    "created_at": now,
                    "updated_at": now,
                }
                # The dictionary's order is INSERT_CUSTOMER's column order.
                await connection.execute(INSERT_CUSTOMER, *customer.values())
        except asyncpg.UniqueViolationError:  # a concurrent create took the email
            await _email_taken(context)
        except asyncpg.ForeignKeyViolationError:  # the counter row's store
            await context.abort(grpc.StatusCode.NOT_FOUND, f"store {store_id} not found")
        return customer_service_pb2.CreateCustomerResponse(customer=customer_to_proto(customer))

    async def UpdateCustomer(
        self, request: customer_service_pb2.UpdateCustomerRequest, context: Context
    ) -> customer_service_pb2.UpdateCustomerResponse:
        if list(request.update_mask.paths) != ["first_name"]:
            await context.abort(
                grpc.StatusCode.UNIMPLEMENTED, "the baseline updates first_name only"
            )
        store_id, customer_id = request.store_id, request.customer_id
        async with self._pool.acquire() as connection, connection.transaction():
            if await connection.fetchrow(LOCK_CUSTOMER, store_id, customer_id) is None:
                await _customer_not_found(context, customer_id)
            row = await connection.fetchrow(
                RENAME_CUSTOMER,
                store_id,
                customer_id,
                request.customer.first_name.strip(),
                datetime.now(UTC),
            )
        return customer_service_pb2.UpdateCustomerResponse(customer=customer_to_proto(row))

    # -- OrderService ---------------------------------------------------------------

    async def GetOrder(
        self, request: order_service_pb2.GetOrderRequest, context: Context
    ) -> order_service_pb2.GetOrderResponse:
        async with self._pool.acquire() as connection:
            order = await connection.fetchrow(GET_ORDER, request.store_id, request.order_id)
            if order is None:
                await context.abort(
                    grpc.StatusCode.NOT_FOUND, f"order {request.order_id} not found"
                )
            message = await _order_message(connection, order)
        return order_service_pb2.GetOrderResponse(order=message)

    async def UpdateOrderStatus(
        self, request: order_service_pb2.UpdateOrderStatusRequest, context: Context
    ) -> order_service_pb2.UpdateOrderStatusResponse:
        target = next(
            (name for name, value in _ORDER_STATUS.items() if value == request.status), None
        )
        sources = [source for source, targets in _TRANSITIONS.items() if target in targets]
        async with self._pool.acquire() as connection, connection.transaction():
            order = await connection.fetchrow(
                MOVE_ORDER,
                request.store_id,
                request.order_id,
                target,
                datetime.now(UTC),
                sources,
            )
            if order is None:
                await context.abort(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"order {request.order_id} cannot become {target}",
                )
            message = await _order_message(connection, order)
            await _record_revision(connection, order)
        return order_service_pb2.UpdateOrderStatusResponse(order=message)

    async def CancelOrder(
        self, request: order_service_pb2.CancelOrderRequest, context: Context
    ) -> order_service_pb2.CancelOrderResponse:
        async with self._pool.acquire() as connection, connection.transaction():
            order = await connection.fetchrow(
                CANCEL_ORDER,
                request.store_id,
                request.order_id,
                datetime.now(UTC),
                request.reason.strip(),
            )
            if order is None:
                await context.abort(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"order {request.order_id} cannot become cancelled",
                )
            message = await _order_message(connection, order)
            await _record_revision(connection, order)
        return order_service_pb2.CancelOrderResponse(order=message)

    async def ListOrders(
        self, request: order_service_pb2.ListOrdersRequest, context: Context
    ) -> order_service_pb2.ListOrdersResponse:
        if (
            request.status
            or request.statuses
            or request.customer_id
            or request.HasField("create_time_start")
            or request.HasField("create_time_end")
        ):
            await context.abort(
                grpc.StatusCode.UNIMPLEMENTED, "the baseline lists orders unfiltered only"
            )
        store_id = request.store_id
        # services/orders/service.py _page_scope of an unfiltered listing.
        scope = {
            "list": "orders",
            "store_id": store_id,
            "status": "None",
            "customer_id": "0",
            "created_from": "None",
            "created_before": "None",
        }
        size, position = await _page(context, self._page_tokens, request, scope)
        async with self._pool.acquire() as connection:
            if position:
                created_at, order_id = position
                orders = await connection.fetch(
                    STORE_ORDERS_AFTER,
                    store_id,
                    datetime.fromisoformat(created_at),
                    order_id,
                    size + 1,
                )
            else:
                orders = await connection.fetch(STORE_ORDERS, store_id, size + 1)
            lines: dict[int, list[Row]] = {}
            customers: dict[int, customer_pb2.Customer] = {}
            if orders:
                order_ids = [order["order_id"] for order in orders]
                for line in await connection.fetch(LINES_OF_ORDERS, order_ids, store_id):
                    lines.setdefault(line["order_id"], []).append(line)
                customer_ids = sorted({order["customer_id"] for order in orders} - {None})
                if customer_ids:
                    for row in await connection.fetch(CUSTOMERS_OF_KEYS, customer_ids, store_id):
                        customers[row["customer_id"]] = customer_to_proto(row)
        # As the real server, the lines and customers of the one row past the page
        # are read too: the page is cut after.
        page, token = self._page_tokens.cut(
            orders, size, scope, lambda last: [last["created_at"].isoformat(), last["order_id"]]
        )
        return order_service_pb2.ListOrdersResponse(
            orders=[
                order_to_proto(
                    order, lines.get(order["order_id"], ()), customers.get(order["customer_id"])
                )
                for order in page
            ],
            next_page_token=token,
        )

    async def CreateOrder(
        self, request: order_service_pb2.CreateOrderRequest, context: Context
    ) -> order_service_pb2.CreateOrderResponse:
        if not request.line_items:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "an order needs a line")
        store_id = request.store_id
        customer_id = request.customer_id
        lines: list[dict[str, Any]] = [
            {
                "line_number": number,
                "sku": line.sku.strip(),
                "name": line.name.strip(),
                "quantity": line.quantity,
                "unit_price_minor": line.unit_price_minor,
                "line_total_minor": line.quantity * line.unit_price_minor,
            }
            for number, line in enumerate(request.line_items, start=1)
        ]
        customer: Row | None = None
        try:
            async with self._pool.acquire() as connection, connection.transaction():
                if customer_id:
                    customer = await connection.fetchrow(SHARE_CUSTOMER, store_id, customer_id)
                    if customer is None:
                        await _customer_not_found(context, customer_id)
                    if not customer["is_active"]:
                        await context.abort(
                            grpc.StatusCode.FAILED_PRECONDITION,
                            f"customer {customer_id} is inactive and cannot place orders",
                        )
                order_id = await connection.fetchval(NEXT_STORE_NUMBER, store_id, ORDER_COUNTER)
                now = datetime.now(UTC)
                order: dict[str, Any] = {
                    "store_id": store_id,
                    "order_id": order_id,
                    "order_number": order_number(order_id),
                    "customer_id": customer_id or None,  # NULL: a guest order
                    "status": PENDING,
                    "currency_code": request.currency_code.strip().upper(),
                    "total_minor": sum(line["line_total_minor"] for line in lines),
                    "contact_email": request.contact_email.strip(),
                    "created_at": now,
                    "updated_at": now,
                }
                # The dictionaries' orders are the INSERT statements' column orders.
                await connection.execute(INSERT_ORDER, *order.values())
                await connection.executemany(
                    INSERT_LINE_ITEM, [(store_id, order_id, *line.values()) for line in lines]
                )
        except asyncpg.ForeignKeyViolationError:  # the counter row's store
            await context.abort(grpc.StatusCode.NOT_FOUND, f"store {store_id} not found")
        return order_service_pb2.CreateOrderResponse(
            order=order_to_proto(
                order, lines, customer_to_proto(customer) if customer is not None else None
            )
        )

    # -- CustomerOrderService -------------------------------------------------------

    async def GetCustomerOrderStats(
        self, request: customer_order_service_pb2.GetCustomerOrderStatsRequest, context: Context
    ) -> customer_order_service_pb2.GetCustomerOrderStatsResponse:
        store_id, customer_id = request.store_id, request.customer_id
        async with self._pool.acquire() as connection:
            rows = await connection.fetch(CUSTOMER_ORDER_STATS, CANCELLED, store_id, customer_id)
        if not rows:
            await _customer_not_found(context, customer_id)
        counted = [row for row in rows if row["currency_code"] is not None]
        return customer_order_service_pb2.GetCustomerOrderStatsResponse(
            stats=stats_to_proto(store_id, customer_id, counted)
        )

    async def ListCustomerOrders(
        self, request: customer_order_service_pb2.ListCustomerOrdersRequest, context: Context
    ) -> customer_order_service_pb2.ListCustomerOrdersResponse:
        store_id, customer_id = request.store_id, request.customer_id
        # services/orders/customer_orders.py list_orders' scope.
        scope = {"list": "customer_orders", "store_id": store_id, "customer_id": customer_id}
        size, position = await _page(context, self._page_tokens, request, scope)
        async with self._pool.acquire() as connection:
            customer = await connection.fetchrow(GET_CUSTOMER, store_id, customer_id)
            if customer is None:
                await _customer_not_found(context, customer_id)
            if position:
                created_at, order_id = position
                orders = await connection.fetch(
                    CUSTOMER_ORDERS_AFTER,
                    store_id,
                    customer_id,
                    datetime.fromisoformat(created_at),
                    order_id,
                    size + 1,
                )
            else:
                orders = await connection.fetch(CUSTOMER_ORDERS, store_id, customer_id, size + 1)
            page, token = self._page_tokens.cut(
                orders,
                size,
                scope,
                lambda last: [last["created_at"].isoformat(), last["order_id"]],
            )
            lines = await _page_line_items(connection, store_id, customer_id, page)
        # Every order is this customer's: one message, copied into each order.
        owner = customer_to_proto(customer)
        return customer_order_service_pb2.ListCustomerOrdersResponse(
            orders=[
                order_to_proto(order, lines.get(order["order_id"], ()), owner) for order in page
            ],
            next_page_token=token,
        )

    # -- bcrypt, never on the event loop --------------------------------------------

    async def _hash_password(self, password: str) -> str:
        salt = bcrypt.gensalt(self._rounds)
        hashed = await self._off_loop(bcrypt.hashpw, password.encode(), salt)
        return hashed.decode("ascii")

    async def _password_matches(self, password: str, hashed: str) -> bool:
        try:
            return await self._off_loop(bcrypt.checkpw, password.encode(), hashed.encode("ascii"))
        except ValueError:  # more than 72 bytes: bcrypt 5 refuses, so it cannot match
            return False

    async def _off_loop(self, function: Callable[..., T], *args: object) -> T:
        # bcrypt releases the GIL: the threads use every core while the loop serves.
        return await asyncio.get_running_loop().run_in_executor(self._bcrypt, function, *args)

    # -- registration ----------------------------------------------------------------

    def register(self, server: grpc.aio.Server) -> None:
        """Adds the three services the way the generated add_*_to_server functions
        do (generic and registered handlers), with only the methods served here."""
        services: dict[
            ServiceDescriptor, dict[str, tuple[Callable[..., Any], type[Message], type[Message]]]
        ] = {
            customer_service_pb2.DESCRIPTOR.services_by_name["CustomerService"]: {
                "GetCustomer": (
                    self.GetCustomer,
                    customer_service_pb2.GetCustomerRequest,
                    customer_service_pb2.GetCustomerResponse,
                ),
                "ListCustomers": (
                    self.ListCustomers,
                    customer_service_pb2.ListCustomersRequest,
                    customer_service_pb2.ListCustomersResponse,
                ),
                "UpdateCustomer": (
                    self.UpdateCustomer,
                    customer_service_pb2.UpdateCustomerRequest,
                    customer_service_pb2.UpdateCustomerResponse,
                ),
                "AuthenticateCustomer": (
                    self.AuthenticateCustomer,
                    customer_service_pb2.AuthenticateCustomerRequest,
                    customer_service_pb2.AuthenticateCustomerResponse,
                ),
                "CreateCustomer": (
                    self.CreateCustomer,
                    customer_service_pb2.CreateCustomerRequest,
                    customer_service_pb2.CreateCustomerResponse,
                ),
            },
            order_service_pb2.DESCRIPTOR.services_by_name["OrderService"]: {
                "CreateOrder": (
                    self.CreateOrder,
                    order_service_pb2.CreateOrderRequest,
                    order_service_pb2.CreateOrderResponse,
                ),
                "GetOrder": (
                    self.GetOrder,
                    order_service_pb2.GetOrderRequest,
                    order_service_pb2.GetOrderResponse,
                ),
                "UpdateOrderStatus": (
                    self.UpdateOrderStatus,
                    order_service_pb2.UpdateOrderStatusRequest,
                    order_service_pb2.UpdateOrderStatusResponse,
                ),
                "CancelOrder": (
                    self.CancelOrder,
                    order_service_pb2.CancelOrderRequest,
                    order_service_pb2.CancelOrderResponse,
                ),
                "ListOrders": (
                    self.ListOrders,
                    order_service_pb2.ListOrdersRequest,
                    order_service_pb2.ListOrdersResponse,
                ),
            },
            customer_order_service_pb2.DESCRIPTOR.services_by_name["CustomerOrderService"]: {
                "GetCustomerOrderStats": (
                    self.GetCustomerOrderStats,
                    customer_order_service_pb2.GetCustomerOrderStatsRequest,
                    customer_order_service_pb2.GetCustomerOrderStatsResponse,
                ),
                "ListCustomerOrders": (
                    self.ListCustomerOrders,
                    customer_order_service_pb2.ListCustomerOrdersRequest,
                    customer_order_service_pb2.ListCustomerOrdersResponse,
                ),
            },
        }
        for service, methods in services.items():
            handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
                name: grpc.unary_unary_rpc_method_handler(
                    behavior,
                    request_deserializer=request_type.FromString,
                    response_serializer=response_type.SerializeToString,
                )
                for name, (behavior, request_type, response_type) in methods.items()
            }
            server.add_generic_rpc_handlers(
                (grpc.method_handlers_generic_handler(service.full_name, handlers),)
            )
            server.add_registered_method_handlers(service.full_name, handlers)


# -- helpers --------------------------------------------------------------------------


async def _page(
    context: Context, codec: PageTokenCodec, request: Any, scope: dict[str, Any]
) -> tuple[int, list[Any]]:
    """The request's page size and the position its page_token holds ([] on the first
    page); INVALID_ARGUMENT as the real server words it, for a bad size or token."""
    try:
        size = resolve_page_size(
            request.page_size, default=DEFAULT_PAGE_SIZE, maximum=MAX_PAGE_SIZE
        )
        position = codec.decode(request.page_token, scope) if request.page_token else []
    except InvalidArgument as error:
        await context.abort(
            grpc.StatusCode.INVALID_ARGUMENT,
            "; ".join(f"{v.field} {v.description}" for v in error.violations),
        )
    return size, position


async def _page_line_items(
    connection: PoolConnection, store_id: int, customer_id: int, page: Sequence[Row]
) -> dict[int, list[Row]]:
    """The line items of a page of the customer's orders, by order id, in line order."""
    by_order: dict[int, list[Row]] = {}
    if page:
        newest, oldest = page[0], page[-1]
        for line in await connection.fetch(
            PAGE_LINE_ITEMS,
            store_id,
            customer_id,
            newest["created_at"],
            newest["order_id"],
            oldest["created_at"],
            oldest["order_id"],
        ):
            by_order.setdefault(line["order_id"], []).append(line)
    return by_order


async def _order_message(connection: PoolConnection, order: Row) -> order_pb2.Order:
    """One order's message: its lines and its customer read on `connection`."""
    lines = await connection.fetch(ORDER_LINE_ITEMS, order["store_id"], order["order_id"])
    customer = None
    if order["customer_id"] is not None:
        row = await connection.fetchrow(GET_CUSTOMER, order["store_id"], order["customer_id"])
        customer = customer_to_proto(row)
    return order_to_proto(order, lines, customer)


async def _record_revision(connection: PoolConnection, order: Row) -> None:
    """services/orders/queries.py move_order: what a status change left, by revision."""
    await connection.execute(
        INSERT_REVISION,
        order["store_id"],
        order["order_id"],
        order["revision"],
        order["status"],
        "",  # the benchmark ships nothing: no tracking reference
        order["cancel_reason"],
        order["updated_at"],
    )


async def _customer_not_found(context: Context, customer_id: int) -> Never:
    await context.abort(grpc.StatusCode.NOT_FOUND, f"customer {customer_id} not found")


async def _email_taken(context: Context) -> Never:
    await context.abort(
        grpc.StatusCode.ALREADY_EXISTS, "a customer with this email already exists in the store"
    )


# -- process --------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.baseline",
        description="The benchmark's bare baseline: twelve RPCs of the real server on raw "
        "asyncpg, without its layers.",
    )
    parser.add_argument(
        "--database-url",
        required=True,
        help="postgresql://user@host:port/db (postgresql+asyncpg:// works too)",
    )
    parser.add_argument("--listen-address", default="127.0.0.1:50061", help="host:port")
    parser.add_argument(
        "--pool-size", type=int, default=10, help="database connections (the real default)"
    )
    parser.add_argument(
        "--bcrypt-rounds",
        type=int,
        default=12,
        help="bcrypt cost of new passwords; use the real server's (its default: 12)",
    )
    parser.add_argument(
        "--page-token-secret",
        # The real server takes it from the environment only; either works here.
        default=os.environ.get("COMMERCE_PAGE_TOKEN_SECRET", ""),
        help="the real server's page token secret (default: $COMMERCE_PAGE_TOKEN_SECRET; "
        "empty: random, so tokens work on this process only)",
    )
    args = parser.parse_args(argv)
    if args.pool_size < 1:
        parser.error("--pool-size must be at least 1")
    if not 4 <= args.bcrypt_rounds <= 31:
        parser.error("--bcrypt-rounds must be from 4 to 31")
    try:
        args.dsn = asyncpg_dsn(args.database_url)
    except ValueError as error:
        parser.error(str(error))
    return args


async def serve(args: argparse.Namespace) -> None:
    pool: Pool = await asyncpg.create_pool(
        args.dsn,
        # Opened up front, so the first calls of a run do not pay for connecting.
        min_size=args.pool_size,
        max_size=args.pool_size,
        max_queries=MAX_QUERIES_PER_CONNECTION,
        max_inactive_connection_lifetime=NO_IDLE_LIMIT,
        reset=keep_session,
    )
    # As many bcrypt threads as the real server's default (password_hash_workers).
    bcrypt_threads = ThreadPoolExecutor(os.cpu_count() or 1, thread_name_prefix="bcrypt")
    server = grpc.aio.server()
    Baseline(
        pool, PageTokenCodec(args.page_token_secret), args.bcrypt_rounds, bcrypt_threads
    ).register(server)
    try:
        port = server.add_insecure_port(args.listen_address)
        await server.start()
        print(f"baseline serving on {port}", flush=True)
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stopping.set)
        await stopping.wait()
    finally:
        await server.stop(0)
        try:
            await asyncio.wait_for(pool.close(), POOL_CLOSE_SECONDS)
        except TimeoutError:
            pool.terminate()
        bcrypt_threads.shutdown(wait=False, cancel_futures=True)


def main(argv: Sequence[str] | None = None) -> None:
    asyncio.run(serve(parse_args(argv)))


if __name__ == "__main__":
    main()
