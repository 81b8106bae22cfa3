"""orders: orders and their line items

Revision ID: orders_0001
Revises:
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from services.core.db.engine import UtcDateTime

revision: str = "orders_0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("orders",)
# Orders reference customers; customers never depends on orders.
depends_on: str | Sequence[str] | None = "customers_0001"


def upgrade() -> None:
    op.create_table(
        "orders",
        sa.Column("store_id", sa.BigInteger(), nullable=False),
        sa.Column("order_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("order_number", sa.String(length=50), nullable=False),
        sa.Column("customer_id", sa.BigInteger(), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("currency_code", sa.String(length=3), nullable=False),
        sa.Column("total_minor", sa.BigInteger(), nullable=False),
        sa.Column("contact_email", sa.String(length=255), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.CheckConstraint(
            "status IN ('pending', 'paid', 'shipped', 'delivered', 'cancelled')",
            name=op.f("ck_orders_status_known"),
        ),
        sa.CheckConstraint("total_minor >= 0", name=op.f("ck_orders_total_not_negative")),
        sa.ForeignKeyConstraint(
            ["store_id", "customer_id"],
            ["customers.store_id", "customers.customer_id"],
            name=op.f("fk_orders_store_id_customer_id_customers"),
        ),
        sa.ForeignKeyConstraint(
            ["store_id"], ["stores.id"], name=op.f("fk_orders_store_id_stores")
        ),
        sa.PrimaryKeyConstraint("store_id", "order_id", name=op.f("pk_orders")),
        sa.UniqueConstraint(
            "store_id", "order_number", name=op.f("uq_orders_store_id_order_number")
        ),
    )
    op.create_index("ix_orders_created", "orders", ["store_id", "created_at", "order_id"])
    op.create_index("ix_orders_status", "orders", ["store_id", "status", "created_at", "order_id"])
    op.create_index(
        "ix_orders_customer",
        "orders",
        ["store_id", "customer_id", "created_at", "order_id"],
        postgresql_include=["status", "currency_code", "total_minor"],
    )
    op.create_table(
        "order_line_items",
        sa.Column("store_id", sa.BigInteger(), nullable=False),
        sa.Column("order_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("line_number", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("sku", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("unit_price_minor", sa.BigInteger(), nullable=False),
        sa.Column("line_total_minor", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("quantity > 0", name=op.f("ck_order_line_items_quantity_positive")),
        sa.CheckConstraint(
            "unit_price_minor >= 0", name=op.f("ck_order_line_items_unit_price_not_negative")
        ),
        sa.ForeignKeyConstraint(
            ["store_id", "order_id"],
            ["orders.store_id", "orders.order_id"],
            name=op.f("fk_order_line_items_store_id_order_id_orders"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "store_id", "order_id", "line_number", name=op.f("pk_order_line_items")
        ),
    )


def downgrade() -> None:
    op.drop_table("order_line_items")
    op.drop_table("orders")
