"""customers: erased customers (erased_at) and tags (customers.tags, customer_tags)

Revision ID: customers_0005
Revises: customers_0004
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from services.core.db.engine import UtcDateTime

revision: str = "customers_0005"
down_revision: str | Sequence[str] | None = "customers_0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A NULL column and a constant default: PostgreSQL adds both without rewriting
    # the table.
    op.add_column("customers", sa.Column("erased_at", UtcDateTime(), nullable=True))
    op.add_column("customers", sa.Column("tags", sa.Text(), server_default="", nullable=False))
    op.create_table(
        "customer_tags",
        sa.Column("store_id", sa.BigInteger(), nullable=False),
        sa.Column("tag", sa.String(64), nullable=False),
        sa.Column("customer_id", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["store_id", "customer_id"],
            ["customers.store_id", "customers.customer_id"],
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("store_id", "tag", "customer_id"),
    )


def downgrade() -> None:
    op.drop_table("customer_tags")
    with op.batch_alter_table("customers") as batch:
        batch.drop_column("tags")
        batch.drop_column("erased_at")
