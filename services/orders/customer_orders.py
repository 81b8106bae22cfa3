"""The customer side of orders (the seed's CustomerOrderService): a customer's order
history, count and statistics. It lives in the orders module because orders owns the
relationship; customers never asks for it."""

from __future__ import annotations

from sqlalchemy import func, select

from services.core.errors import InvalidArgument
from services.core.pagination import PageTokenCodec, resolve_page_size
from services.core.tenancy import TenantDatabase
from services.customers.service import load_customer
from services.orders.models import Order, OrderStatus
from services.orders.service import OrderPage, newest_first_page
from services.orders.statistics import CustomerOrderStats, OrderMetricsProvider

DEFAULT_RECENT_LIMIT = 5
MAX_RECENT_LIMIT = 50


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
        async with self._db.reading(store_id) as uow:
            customer = await load_customer(uow.session, store_id, customer_id)
            return await newest_first_page(
                uow.session,
                self._page_tokens,
                scope,
                [Order.store_id == store_id, Order.customer_id == customer_id],
                page_size=page_size,
                page_token=page_token,
                customer=customer,
            )

    async def recent_orders(self, store_id: int, customer_id: int, limit: int = 0) -> list[Order]:
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
