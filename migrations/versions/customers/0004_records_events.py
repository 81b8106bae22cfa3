"""customers: records its events in the core's outbox (nothing of its own changes)

A deployment that migrates only some modules (`alembic upgrade customers@head`) gets
the outbox tables with them.

Revision ID: customers_0004
Revises: customers_0003
Create Date: 2026-11-29
"""

from collections.abc import Sequence

revision: str = "customers_0004"
down_revision: str | Sequence[str] | None = "customers_0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = "core_0003"


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
