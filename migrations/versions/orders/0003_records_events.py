"""orders: records its events in the core's outbox (nothing of its own changes)

A deployment that migrates only some modules (`alembic upgrade orders@head`) gets
the outbox tables with them.

Revision ID: orders_0003
Revises: orders_0002
Create Date: 2026-11-29
"""

from collections.abc import Sequence

revision: str = "orders_0003"
down_revision: str | Sequence[str] | None = "orders_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = "core_0003"


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
