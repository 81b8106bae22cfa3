"""customers: its changes are recorded as events, in the core's outbox

Revision ID: customers_0004
Revises: customers_0003
Create Date: 2026-11-29
"""

from collections.abc import Sequence

revision: str = "customers_0004"
down_revision: str | Sequence[str] | None = "customers_0003"
branch_labels: str | Sequence[str] | None = None
# Every write of the module records its event in outbox_events: upgrading the
# module's branch alone (`customers@head`) must bring the outbox along.
depends_on: str | Sequence[str] | None = "core_0003"


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
