"""orders: the revision behind an order's etag, its tracking reference and cancel
reason, what each status change left of the order, and guest orders newest first

Revision ID: orders_0002
Revises: orders_0001
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from services.core.db.engine import UtcDateTime

revision: str = "orders_0002"
down_revision: str | Sequence[str] | None = "orders_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Server defaults: the orders placed before these columns existed get them too,
    # on SQLite as well (which adds a NOT NULL column only with a default).
    op.add_column("orders", sa.Column("revision", sa.Integer(), server_default="1", nullable=False))
    op.add_column(
        "orders",
        sa.Column("tracking_reference", sa.String(length=100), server_default="", nullable=False),
    )
    op.add_column(
        "orders",
        sa.Column("cancel_reason", sa.String(length=200), server_default="", nullable=False),
    )
    # Guest orders newest first, in index order (see services.orders.models).
    op.create_index(
        "ix_orders_guests",
        "orders",
        ["store_id", "created_at", "order_id"],
        postgresql_where=sa.text("customer_id IS NULL"),
        sqlite_where=sa.text("customer_id IS NULL"),
    )
    op.create_table(
        "order_revisions",
        sa.Column("store_id", sa.BigInteger(), nullable=False),
        sa.Column("order_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("revision", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("tracking_reference", sa.String(length=100), nullable=False),
        sa.Column("cancel_reason", sa.String(length=200), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["store_id", "order_id"],
            ["orders.store_id", "orders.order_id"],
            name=op.f("fk_order_revisions_store_id_order_id_orders"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "store_id", "order_id", "revision", name=op.f("pk_order_revisions")
        ),
    )
    op.create_index("ix_order_revisions_updated_at", "order_revisions", ["updated_at"])


def downgrade() -> None:
    op.drop_index("ix_order_revisions_updated_at", table_name="order_revisions")
    op.drop_table("order_revisions")
    op.drop_index("ix_orders_guests", table_name="orders")
    with op.batch_alter_table("orders") as batch:
        batch.drop_column("cancel_reason")
        batch.drop_column("tracking_reference")
        batch.drop_column("revision")
