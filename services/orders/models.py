"""Orders and their line items. The orders module owns the link to customers: the
foreign key (store_id, customer_id) -> customers lives here, and customers has no
idea it exists.

Every key includes `store_id`, so no order can reference another store's customer,
even through a bug."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    SmallInteger,
    String,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from services.core.db.engine import Base, UtcDateTime, utc_now
from services.core.db.snapshots import RowSnapshot, columns_of
from services.customers.models import CustomerSnapshot


class OrderStatus(StrEnum):
    """Stored as these strings; never rename one."""

    PENDING = "pending"
    PAID = "paid"
    SHIPPED = "shipped"
    DELIVERED = "delivered"
    CANCELLED = "cancelled"


_STATUS_VALUES = ", ".join(f"'{status.value}'" for status in OrderStatus)


class Order(Base):
    __tablename__ = "orders"

    store_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("stores.id"), primary_key=True)
    # Allocated from the store's counter in placing order, so ids are per store.
    order_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    order_number: Mapped[str] = mapped_column(String(50))
    # NULL for a guest order; with a NULL member the composite foreign key is not
    # checked, as SQL specifies (MATCH SIMPLE).
    customer_id: Mapped[int | None] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(20))
    currency_code: Mapped[str] = mapped_column(String(3))
    total_minor: Mapped[int] = mapped_column(BigInteger)
    contact_email: Mapped[str] = mapped_column(String(255), default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now)
    # Bumped by every change; the API shows it as the order's etag (AIP-154).
    revision: Mapped[int] = mapped_column(Integer, server_default="1")
    tracking_reference: Mapped[str] = mapped_column(String(100), server_default="")
    cancel_reason: Mapped[str] = mapped_column(String(200), server_default="")

    __table_args__ = (
        ForeignKeyConstraint(
            ["store_id", "customer_id"], ["customers.store_id", "customers.customer_id"]
        ),
        UniqueConstraint("store_id", "order_number"),
        CheckConstraint(f"status IN ({_STATUS_VALUES})", name="status_known"),
        CheckConstraint("total_minor >= 0", name="total_not_negative"),
        # Every listing is newest first with the keyset (created_at, order_id), and each
        # filter has an index that starts with it, so a page is one index range scan
        # however deep it is.
        Index("ix_orders_created", "store_id", "created_at", "order_id"),
        Index("ix_orders_status", "store_id", "status", "created_at", "order_id"),
        # Guest orders newest first. ix_orders_customer finds them too (customer_id IS
        # NULL), but not in its order: a plan through it reads and sorts every guest
        # order of the store for each page, and a generic plan picks it when the
        # statistics saw few guests.
        Index(
            "ix_orders_guests",
            "store_id",
            "created_at",
            "order_id",
            postgresql_where=text("customer_id IS NULL"),
            sqlite_where=text("customer_id IS NULL"),
        ),
        # A customer's history, and on PostgreSQL also their statistics: the included
        # columns let the statistics aggregate read the index alone (index-only scan)
        # instead of visiting one table page per order.
        Index(
            "ix_orders_customer",
            "store_id",
            "customer_id",
            "created_at",
            "order_id",
            postgresql_include=["status", "currency_code", "total_minor"],
        ),
    )


class OrderLineItem(Base):
    __tablename__ = "order_line_items"

    store_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    order_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    line_number: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    sku: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    quantity: Mapped[int] = mapped_column(Integer)
    unit_price_minor: Mapped[int] = mapped_column(BigInteger)
    line_total_minor: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (
        ForeignKeyConstraint(
            ["store_id", "order_id"], ["orders.store_id", "orders.order_id"], ondelete="CASCADE"
        ),
        CheckConstraint("quantity > 0", name="quantity_positive"),
        CheckConstraint("unit_price_minor >= 0", name="unit_price_not_negative"),
    )


class OrderRevision(Base):
    """What a status change left of an order's changing fields, one row per change:
    a retried change answers with the order as its first try left it, even after
    the order moved on (its other fields never change)."""

    __tablename__ = "order_revisions"

    store_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    order_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    revision: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    status: Mapped[str] = mapped_column(String(20))
    tracking_reference: Mapped[str] = mapped_column(String(100))
    cancel_reason: Mapped[str] = mapped_column(String(200))
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)

    __table_args__ = (
        ForeignKeyConstraint(
            ["store_id", "order_id"], ["orders.store_id", "orders.order_id"], ondelete="CASCADE"
        ),
        # Expired revisions are found by age across every store (purge_expired_revisions).
        Index("ix_order_revisions_updated_at", "updated_at"),
    )


# How many rows a customer's statistics in one currency are spread over. Stored
# meaning: the slot of an order is order_id % STATISTICS_SLOTS, and the kept rows
# follow it (changing it needs the rows rebuilt: `commerce order-stats check --repair`).
STATISTICS_SLOTS = 16


def statistics_slot(order_id: int) -> int:
    return order_id % STATISTICS_SLOTS


class CustomerOrderStatistics(Base):
    """Each customer's order statistics per currency (over STATISTICS_SLOTS rows),
    kept exact by the orders that move them, in their own transaction
    (services.orders.queries): a read is one small index range whatever the
    customer's history. Only orders that count (not cancelled) are in them; a
    (customer, currency, slot) without such orders has no row.

    Orders own it, as they own the link to customers: the foreign key points from here
    to customers, never the reverse."""

    __tablename__ = "customer_order_stats"

    store_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    customer_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    currency_code: Mapped[str] = mapped_column(String(3), primary_key=True)
    # The customer's orders in a currency are spread over STATISTICS_SLOTS rows by
    # order id (statistics_slot): concurrent orders of one customer (consecutive ids)
    # lock different rows from their statistics change to their commit, instead of
    # queueing on one, one commit (one WAL flush) at a time. A read sums the slots.
    slot: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    order_count: Mapped[int] = mapped_column(BigInteger)
    # The sum of the counted orders' totals.
    total_minor: Mapped[int] = mapped_column(BigInteger)
    first_order_at: Mapped[datetime] = mapped_column(UtcDateTime)
    last_order_at: Mapped[datetime] = mapped_column(UtcDateTime)

    __table_args__ = (
        ForeignKeyConstraint(
            ["store_id", "customer_id"], ["customers.store_id", "customers.customer_id"]
        ),
        # Zero only for a moment: the change that takes the count to zero deletes the row.
        CheckConstraint("order_count >= 0", name="order_count_not_negative"),
        CheckConstraint("total_minor >= 0", name="total_not_negative"),
    )


@dataclass(frozen=True, slots=True)
class LineItemSnapshot(RowSnapshot):
    """A line as the queries return it: OrderLineItem's fields, without the ORM."""

    store_id: int
    order_id: int
    line_number: int
    sku: str
    name: str
    quantity: int
    unit_price_minor: int
    line_total_minor: int


@dataclass(frozen=True, slots=True)
class OrderSnapshot:
    """An order as the queries return it: Order's fields, its lines and its customer
    (None for a guest order), read-only and without the ORM, whose instances cost
    more CPU to build than the queries took (docs/performance.md)."""

    store_id: int
    order_id: int
    order_number: str
    customer_id: int | None
    status: str
    currency_code: str
    total_minor: int
    contact_email: str
    created_at: datetime
    updated_at: datetime
    revision: int
    tracking_reference: str
    cancel_reason: str
    line_items: tuple[LineItemSnapshot, ...] = ()
    customer: CustomerSnapshot | None = None

    @classmethod
    def of(
        cls,
        row: Mapping[str, Any],
        line_items: tuple[LineItemSnapshot, ...],
        customer: CustomerSnapshot | None,
    ) -> OrderSnapshot:
        """From a row of ORDER_COLUMNS, by position (see RowSnapshot.of)."""
        return cls(*[*row.values(), line_items, customer])


# The columns the snapshots are made of, in their field order.
ORDER_COLUMNS = columns_of(Order, OrderSnapshot, besides=("line_items", "customer"))
LINE_ITEM_COLUMNS = columns_of(OrderLineItem, LineItemSnapshot)
