"""core: find the idempotency keys of what a request created

EraseCustomer erases the fingerprints of the requests that created a customer's
data (a fingerprint is a digest of the request, personal data included); this
index finds them by operation and resource instead of reading the store's keys.

Revision ID: core_0004
Revises: core_0003
Create Date: 2026-11-29
"""

from collections.abc import Sequence

from alembic import op

revision: str = "core_0004"
down_revision: str | Sequence[str] | None = "core_0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_idempotency_keys_resource",
        "idempotency_keys",
        ["store_id", "operation", "resource_id"],
    )


def downgrade() -> None:
    op.drop_index("ix_idempotency_keys_resource", table_name="idempotency_keys")
