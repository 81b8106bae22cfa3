"""orders: each customer's order statistics, kept per currency (customer_order_stats),
filled from the orders there are

The backfill runs per store, a range of customer ids at a time: each INSERT ..
SELECT aggregates one range's orders (one range of ix_orders_customer), so no
statement reads a whole store. All of it is one transaction with the table's
creation: a migration that fails leaves nothing behind, and a rerun starts over.
Orders placed while it runs by servers that do not keep the statistics yet are not
counted: migrate before starting them, or run `commerce order-stats check --repair`
after.

Revision ID: orders_0004
Revises: orders_0003
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

from services.core.db.engine import UtcDateTime

revision: str = "orders_0004"
down_revision: str | Sequence[str] | None = "orders_0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Customer ids per backfill statement (the tests pass a smaller one through the
# Alembic config's attributes, to cross several ranges).
BATCH_OPTION = "orders_stats_backfill_customers"
DEFAULT_BATCH = 5_000

_STORES = sa.text("SELECT DISTINCT store_id FROM customers ORDER BY store_id")
_HIGHEST_CUSTOMER = sa.text("SELECT max(customer_id) FROM customers WHERE store_id = :store_id")
# An order's slot is order_id % 16 (services.orders.models.statistics_slot, as it
# was when this migration was written).
_BACKFILL = sa.text(
    "INSERT INTO customer_order_stats (store_id, customer_id, currency_code, slot,"
    " order_count, total_minor, first_order_at, last_order_at)"
    " SELECT store_id, customer_id, currency_code, order_id % 16, count(*),"
    " sum(total_minor), min(created_at), max(created_at)"
    " FROM orders WHERE store_id = :store_id AND customer_id > :after"
    " AND customer_id <= :through AND status <> 'cancelled'"
    " GROUP BY store_id, customer_id, currency_code, order_id % 16"
)


def upgrade() -> None:
    op.create_table(
        "customer_order_stats",
        sa.Column("store_id", sa.BigInteger(), nullable=False),
        sa.Column("customer_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("currency_code", sa.String(length=3), nullable=False),
        sa.Column("slot", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("order_count", sa.BigInteger(), nullable=False),
        sa.Column("total_minor", sa.BigInteger(), nullable=False),
        sa.Column("first_order_at", UtcDateTime(), nullable=False),
        sa.Column("last_order_at", UtcDateTime(), nullable=False),
        sa.CheckConstraint(
            "order_count >= 0", name=op.f("ck_customer_order_stats_order_count_not_negative")
        ),
        sa.CheckConstraint(
            "total_minor >= 0", name=op.f("ck_customer_order_stats_total_not_negative")
        ),
        sa.ForeignKeyConstraint(
            ["store_id", "customer_id"],
            ["customers.store_id", "customers.customer_id"],
            name=op.f("fk_customer_order_stats_store_id_customer_id_customers"),
        ),
        sa.PrimaryKeyConstraint(
            "store_id",
            "customer_id",
            "currency_code",
            "slot",
            name=op.f("pk_customer_order_stats"),
        ),
    )
    batch = int(context.config.attributes.get(BATCH_OPTION, DEFAULT_BATCH))
    connection = op.get_bind()
    for store_id in connection.execute(_STORES).scalars().all():
        highest = connection.execute(_HIGHEST_CUSTOMER, {"store_id": store_id}).scalar() or 0
        for after in range(0, highest, batch):
            connection.execute(
                _BACKFILL, {"store_id": store_id, "after": after, "through": after + batch}
            )


def downgrade() -> None:
    op.drop_table("customer_order_stats")
