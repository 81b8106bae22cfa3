"""customers: failed logins per store and subject, for brute-force protection

Revision ID: customers_0002
Revises: customers_0001
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from services.core.db.engine import UtcDateTime

revision: str = "customers_0002"
down_revision: str | Sequence[str] | None = "customers_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "customer_login_throttles",
        sa.Column("store_id", sa.BigInteger(), nullable=False),
        sa.Column("subject", sa.String(length=80), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("window_started_at", UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["store_id"], ["stores.id"], name=op.f("fk_customer_login_throttles_store_id_stores")
        ),
        sa.PrimaryKeyConstraint("store_id", "subject", name=op.f("pk_customer_login_throttles")),
    )
    op.create_index(
        "ix_customer_login_throttles_window",
        "customer_login_throttles",
        ["store_id", "window_started_at"],
    )


def downgrade() -> None:
    op.drop_table("customer_login_throttles")
