"""loyalty: accounts and their ledger

Revision ID: loyalty_0001
Revises:
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from services.core.db.engine import UtcDateTime

revision: str = "loyalty_0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("loyalty",)
# Loyalty references customers; neither customers nor orders depends on loyalty.
depends_on: str | Sequence[str] | None = "customers_0001"


def upgrade() -> None:
    op.create_table(
        "loyalty_accounts",
        sa.Column("store_id", sa.BigInteger(), nullable=False),
        sa.Column("customer_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("points_balance", sa.BigInteger(), nullable=False),
        sa.Column("lifetime_points", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.CheckConstraint(
            "lifetime_points >= points_balance",
            name=op.f("ck_loyalty_accounts_balance_within_lifetime"),
        ),
        sa.CheckConstraint(
            "points_balance >= 0", name=op.f("ck_loyalty_accounts_balance_not_negative")
        ),
        sa.ForeignKeyConstraint(
            ["store_id", "customer_id"],
            ["customers.store_id", "customers.customer_id"],
            name=op.f("fk_loyalty_accounts_store_id_customer_id_customers"),
        ),
        sa.ForeignKeyConstraint(
            ["store_id"], ["stores.id"], name=op.f("fk_loyalty_accounts_store_id_stores")
        ),
        sa.PrimaryKeyConstraint("store_id", "customer_id", name=op.f("pk_loyalty_accounts")),
    )
    op.create_table(
        "loyalty_movements",
        sa.Column("store_id", sa.BigInteger(), nullable=False),
        sa.Column("movement_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("customer_id", sa.BigInteger(), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("balance_after", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.String(length=200), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.CheckConstraint(
            "balance_after >= 0", name=op.f("ck_loyalty_movements_balance_after_not_negative")
        ),
        sa.CheckConstraint("points <> 0", name=op.f("ck_loyalty_movements_points_not_zero")),
        sa.ForeignKeyConstraint(
            ["store_id", "customer_id"],
            ["loyalty_accounts.store_id", "loyalty_accounts.customer_id"],
            name=op.f("fk_loyalty_movements_store_id_customer_id_loyalty_accounts"),
        ),
        sa.PrimaryKeyConstraint("store_id", "movement_id", name=op.f("pk_loyalty_movements")),
    )
    op.create_index(
        "ix_loyalty_movements_customer",
        "loyalty_movements",
        ["store_id", "customer_id", "movement_id"],
    )


def downgrade() -> None:
    op.drop_table("loyalty_movements")
    op.drop_table("loyalty_accounts")
