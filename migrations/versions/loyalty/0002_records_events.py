"""loyalty: its changes are recorded as events, in the core's outbox

Revision ID: loyalty_0002
Revises: loyalty_0001
Create Date: 2026-11-29
"""

from collections.abc import Sequence

revision: str = "loyalty_0002"
down_revision: str | Sequence[str] | None = "loyalty_0001"
branch_labels: str | Sequence[str] | None = None
# Every write of the module records its event in outbox_events: upgrading the
# module's branch alone (`loyalty@head`) must bring the outbox along.
depends_on: str | Sequence[str] | None = "core_0003"


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
