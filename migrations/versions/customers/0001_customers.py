"""customers: customers and their addresses

Revision ID: customers_0001
Revises:
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from services.core.db.engine import UtcDateTime

revision: str = "customers_0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("customers",)
depends_on: str | Sequence[str] | None = "core_0001"


def upgrade() -> None:
    op.create_table(
        "customers",
        sa.Column("store_id", sa.BigInteger(), nullable=False),
        sa.Column("customer_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("customer_number", sa.String(length=50), nullable=False),
        sa.Column("email", sa.String(length=255), nullable=False),
        sa.Column("email_key", sa.String(length=320), nullable=False),
        sa.Column("hashed_password", sa.String(length=255), nullable=True),
        sa.Column("first_name", sa.String(length=100), nullable=False),
        sa.Column("last_name", sa.String(length=100), nullable=False),
        sa.Column("phone", sa.String(length=50), nullable=False),
        sa.Column("marketing_consent", sa.Boolean(), nullable=False),
        sa.Column("preferred_language", sa.String(length=35), nullable=False),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["store_id"], ["stores.id"], name=op.f("fk_customers_store_id_stores")
        ),
        sa.PrimaryKeyConstraint("store_id", "customer_id", name=op.f("pk_customers")),
        sa.UniqueConstraint(
            "store_id", "customer_number", name=op.f("uq_customers_store_id_customer_number")
        ),
        sa.UniqueConstraint("store_id", "email_key", name=op.f("uq_customers_store_id_email_key")),
    )
    op.create_table(
        "customer_addresses",
        sa.Column("store_id", sa.BigInteger(), nullable=False),
        sa.Column("address_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("customer_id", sa.BigInteger(), nullable=False),
        sa.Column("recipient_name", sa.String(length=100), nullable=False),
        sa.Column("address_line1", sa.String(length=255), nullable=False),
        sa.Column("address_line2", sa.String(length=255), nullable=False),
        sa.Column("city", sa.String(length=100), nullable=False),
        sa.Column("postal_code", sa.String(length=20), nullable=False),
        sa.Column("region", sa.String(length=100), nullable=False),
        sa.Column("country_code", sa.String(length=2), nullable=False),
        sa.Column("phone", sa.String(length=50), nullable=False),
        sa.Column("default_shipping", sa.Boolean(), nullable=False),
        sa.Column("default_billing", sa.Boolean(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["store_id", "customer_id"],
            ["customers.store_id", "customers.customer_id"],
            name=op.f("fk_customer_addresses_store_id_customer_id_customers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("store_id", "address_id", name=op.f("pk_customer_addresses")),
    )
    op.create_index(
        "ix_customer_addresses_customer",
        "customer_addresses",
        ["store_id", "customer_id", "address_id"],
    )
    for flag in ("default_shipping", "default_billing"):
        op.create_index(
            f"uq_customer_addresses_{flag}",
            "customer_addresses",
            ["store_id", "customer_id"],
            unique=True,
            postgresql_where=sa.text(flag),
            sqlite_where=sa.text(flag),
        )


def downgrade() -> None:
    op.drop_table("customer_addresses")
    op.drop_table("customers")
