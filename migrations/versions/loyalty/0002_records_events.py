"""loyalty: records its events in the core's outbox (nothing of its own changes)

A deployment that migrates only some modules (`alembic upgrade loyalty@head`) gets
the outbox tables with them.

Revision ID: loyalty_0002
Revises: loyalty_0001
Create Date: 2026-11-29
"""

from collections.abc import Sequence

revision: str = "loyalty_0002"
down_revision: str | Sequence[str] | None = "loyalty_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = "core_0003"


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
