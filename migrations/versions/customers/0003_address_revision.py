"""customers: a revision per address, shown as its etag

Revision ID: customers_0003
Revises: customers_0002
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "customers_0003"
down_revision: str | Sequence[str] | None = "customers_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A constant default: PostgreSQL adds the column without rewriting the table, and
    # every existing address starts at revision 1.
    op.add_column(
        "customer_addresses",
        sa.Column("revision", sa.Integer(), server_default=sa.text("1"), nullable=False),
    )


def downgrade() -> None:
    with op.batch_alter_table("customer_addresses") as batch:
        batch.drop_column("revision")
