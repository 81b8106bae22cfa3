"""Customer order statistics, computed by the database in one aggregate query, and
the orders module's customer metrics provider built on them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import and_, func, select

from services.core.customer_metrics import CustomerMetric
from services.core.database import UtcDateTime
from services.core.errors import NotFound
from services.core.tenancy import TenantDatabase
from services.customers.models import Customer
from services.customers.service import check_customer_id
from services.orders.models import Order, OrderStatus


@dataclass(frozen=True)
class CurrencyTotals:
    currency_code: str
    order_count: int
    total_spent_minor: int

    @property
    def avg_order_value_minor(self) -> int:
        """The mean order total, rounded half away from zero (totals are never
        negative, so: half up), in exact integer arithmetic."""
        return (2 * self.total_spent_minor + self.order_count) // (2 * self.order_count)


@dataclass(frozen=True)
class CustomerOrderStats:
    """A customer's order statistics; cancelled orders count in none of them."""

    store_id: int
    customer_id: int
    # One entry per currency, sorted by currency code; empty without orders.
    currencies: list[CurrencyTotals] = field(default_factory=list)
    first_order_time: datetime | None = None
    last_order_time: datetime | None = None

    @property
    def total_orders(self) -> int:
        return sum(totals.order_count for totals in self.currencies)


class OrderMetricsProvider:
    """The orders module's CustomerMetricsProvider (services.core.customer_metrics)."""

    source = "orders"

    def __init__(self, database: TenantDatabase) -> None:
        self._db = database

    async def customer_order_stats(self, store_id: int, customer_id: int) -> CustomerOrderStats:
        check_customer_id(customer_id)
        # One round trip: the customer LEFT JOIN its counted orders, grouped by
        # currency. No row: no such customer. One row with a NULL currency: a customer
        # without orders. On PostgreSQL the aggregate reads ix_orders_customer alone
        # (its INCLUDE columns cover it), in one index range.
        counted = and_(
            Order.store_id == Customer.store_id,
            Order.customer_id == Customer.customer_id,
            Order.status != OrderStatus.CANCELLED.value,
        )
        statement = (
            select(
                Order.currency_code,
                func.count(Order.order_id),
                func.sum(Order.total_minor),
                func.min(Order.created_at, type_=UtcDateTime()),
                func.max(Order.created_at, type_=UtcDateTime()),
            )
            .select_from(Customer)
            .outerjoin(Order, counted)
            .where(Customer.store_id == store_id, Customer.customer_id == customer_id)
            .group_by(Order.currency_code)
            .order_by(Order.currency_code)
        )
        async with self._db.reading(store_id) as uow:
            rows = (await uow.session.execute(statement)).all()
        if not rows:
            raise NotFound("customer", str(customer_id))
        counted_rows = [row for row in rows if row[0] is not None]
        return CustomerOrderStats(
            store_id=store_id,
            customer_id=customer_id,
            # PostgreSQL's sum(bigint) is numeric: back to int, exactly.
            currencies=[
                CurrencyTotals(code, count, int(total)) for code, count, total, *_ in counted_rows
            ],
            first_order_time=min((row[3] for row in counted_rows), default=None),
            last_order_time=max((row[4] for row in counted_rows), default=None),
        )

    async def customer_metrics(self, store_id: int, customer_id: int) -> list[CustomerMetric]:
        stats = await self.customer_order_stats(store_id, customer_id)
        metrics = [CustomerMetric("total_orders", "Total orders", stats.total_orders)]
        for totals in stats.currencies:
            code = totals.currency_code
            metrics += [
                CustomerMetric("total_spent", "Total spent", totals.total_spent_minor, code),
                CustomerMetric(
                    "avg_order_value", "Average order value", totals.avg_order_value_minor, code
                ),
            ]
        return [
            *metrics,
            CustomerMetric("first_order_time", "First order", stats.first_order_time),
            CustomerMetric("last_order_time", "Last order", stats.last_order_time),
        ]
