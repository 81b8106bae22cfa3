"""The customer side of orders (the seed's CustomerOrderService): a customer's order
history, count and statistics. It lives in the orders module because orders owns the
relationship; customers never asks for it."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ColumnElement, and_, bindparam, func, select, tuple_

from services.core.database import UtcDateTime
from services.core.errors import InvalidArgument
from services.core.pagination import PageTokenCodec, resolve_page_size
from services.core.sql import Statement
from services.core.tenancy import TenantDatabase
from services.customers.service import find_customer, load_customer
from services.orders.models import (
    LINE_ITEM_COLUMNS,
    ORDER_COLUMNS,
    LineItemSnapshot,
    Order,
    OrderLineItem,
    OrderSnapshot,
    OrderStatus,
)
from services.orders.service import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, OrderPage
from services.orders.statistics import CustomerOrderStats, OrderMetricsProvider

DEFAULT_RECENT_LIMIT = 5
MAX_RECENT_LIMIT = 50


def _customer_orders(*conditions: ColumnElement[bool]) -> Statement:
    """A page of the customer's orders, newest first by the keyset (created_at,
    order_id): one backwards range of ix_orders_customer however deep."""
    return Statement(
        select(*ORDER_COLUMNS)
        .where(
            Order.store_id == bindparam("store_id"),
            Order.customer_id == bindparam("customer_id"),
            *conditions,
        )
        .order_by(Order.created_at.desc(), Order.order_id.desc())
        .limit(bindparam("limit"))
    )


def _keyset(time: str, order_id: str) -> ColumnElement[Any]:
    return tuple_(bindparam(time, type_=UtcDateTime()), bindparam(order_id, type_=BigInteger()))


_ORDER_KEY = tuple_(Order.created_at, Order.order_id)
_FIRST_PAGE = _customer_orders()
_NEXT_PAGE = _customer_orders(_keyset("before_time", "before_id") > _ORDER_KEY)
# The lines of the customer's orders between two keys of the keyset, both included.
_PAGE_LINES = Statement(
    select(*LINE_ITEM_COLUMNS)
    .join(
        Order,
        and_(Order.store_id == OrderLineItem.store_id, Order.order_id == OrderLineItem.order_id),
    )
    .where(
        Order.store_id == bindparam("store_id"),
        Order.customer_id == bindparam("customer_id"),
        _keyset("newest_time", "newest_id") >= _ORDER_KEY,
        _keyset("oldest_time", "oldest_id") <= _ORDER_KEY,
    )
    .order_by(OrderLineItem.order_id, OrderLineItem.line_number)
)


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
        """The customer's orders, newest first, one page at a time: the customer, the
        page and the page's lines, three fixed statements (services.core.sql)."""
        scope = {"list": "customer_orders", "store_id": store_id, "customer_id": customer_id}
        size = resolve_page_size(page_size, default=DEFAULT_PAGE_SIZE, maximum=MAX_PAGE_SIZE)
        params: dict[str, Any] = {"store_id": store_id, "customer_id": customer_id}
        page_query = _FIRST_PAGE
        if page_token:
            created_at, order_id = self._page_tokens.decode(page_token, scope)
            params |= {"before_time": datetime.fromisoformat(created_at), "before_id": order_id}
            page_query = _NEXT_PAGE
        async with self._db.statements(store_id, transaction=False) as statements:
            customer = await find_customer(statements, store_id, customer_id)
            rows, token = self._page_tokens.cut(
                list(await statements.fetch(page_query, params | {"limit": size + 1})),
                size,
                scope,
                lambda last: [last["created_at"].isoformat(), last["order_id"]],
            )
            lines: dict[int, list[LineItemSnapshot]] = {}
            if rows:
                # The page is one range of the customer's keyset: its lines in one read.
                newest, oldest = rows[0], rows[-1]
                bounds = {
                    "newest_time": newest["created_at"],
                    "newest_id": newest["order_id"],
                    "oldest_time": oldest["created_at"],
                    "oldest_id": oldest["order_id"],
                }
                for line in await statements.fetch(_PAGE_LINES, params | bounds):
                    lines.setdefault(line["order_id"], []).append(LineItemSnapshot.of(line))
        orders = [
            OrderSnapshot.of(row, tuple(lines.get(row["order_id"], ())), customer) for row in rows
        ]
        return OrderPage(orders, token)

    async def recent_orders(
        self, store_id: int, customer_id: int, limit: int = 0
    ) -> Sequence[Order | OrderSnapshot]:
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
        statement = select(func.count()).where(
            Order.store_id == store_id, Order.customer_id == customer_id
        )
        if status is not None:
            statement = statement.where(Order.status == status.value)
        async with self._db.reading(store_id) as uow:
            await load_customer(uow.session, store_id, customer_id)
            return (await uow.session.execute(statement)).scalar_one()

    async def order_stats(self, store_id: int, customer_id: int) -> CustomerOrderStats:
        return await self._statistics.customer_order_stats(store_id, customer_id)
