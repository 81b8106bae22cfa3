"""core: the transactional outbox of events, their sequences and the relay's state

Revision ID: core_0003
Revises: core_0002
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from services.core.db.engine import UtcDateTime

revision: str = "core_0003"
down_revision: str | Sequence[str] | None = "core_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Wakes the relay (LISTEN commerce_outbox) when a transaction that wrote events
# commits: NOTIFY is delivered at commit, and once per transaction.
_NOTIFY_FUNCTION = """
CREATE FUNCTION commerce_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('commerce_outbox', '');
  RETURN NULL;
END
$$
"""
_NOTIFY_TRIGGER = """
CREATE TRIGGER outbox_events_notify AFTER INSERT ON outbox_events
FOR EACH STATEMENT EXECUTE FUNCTION commerce_outbox_notify()
"""


def upgrade() -> None:
    placed = sa.text("feed_position IS NOT NULL")
    unplaced = sa.text("feed_position IS NULL")
    op.create_table(
        "outbox_events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column(
            "store_id",
            sa.BigInteger(),
            sa.ForeignKey("stores.id", ondelete="CASCADE", name="fk_outbox_events_store_id_stores"),
            nullable=False,
        ),
        sa.Column("module", sa.String(50), nullable=False),
        sa.Column("event_type", sa.String(200), nullable=False),
        sa.Column("subject", sa.String(200), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("occurred_at", UtcDateTime(), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("feed_position", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_outbox_events"),
    )
    op.create_index(
        "ix_outbox_events_unplaced",
        "outbox_events",
        ["id"],
        postgresql_where=unplaced,
        sqlite_where=unplaced,
    )
    op.create_index(
        "ix_outbox_events_feed_position",
        "outbox_events",
        ["feed_position"],
        unique=True,
        postgresql_where=placed,
        sqlite_where=placed,
    )
    op.create_index(
        "ix_outbox_events_store_feed",
        "outbox_events",
        ["store_id", "feed_position"],
        postgresql_where=placed,
        sqlite_where=placed,
    )
    op.create_table(
        "event_sequences",
        sa.Column(
            "store_id",
            sa.BigInteger(),
            sa.ForeignKey(
                "stores.id", ondelete="CASCADE", name="fk_event_sequences_store_id_stores"
            ),
            nullable=False,
        ),
        sa.Column("subject", sa.String(200), nullable=False),
        sa.Column("last_sequence", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("store_id", "subject", name="pk_event_sequences"),
    )
    op.create_table(
        "event_relay",
        sa.Column("name", sa.String(50), nullable=False),
        sa.Column("holder", sa.String(200), nullable=False),
        sa.Column("lease_expires_at", UtcDateTime(), nullable=False),
        sa.Column("placed_position", sa.BigInteger(), nullable=False),
        sa.Column("delivered_position", sa.BigInteger(), nullable=False),
        sa.Column("pruned_position", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_event_relay"),
    )
    if op.get_context().dialect.name == "postgresql":
        op.execute(_NOTIFY_FUNCTION)
        op.execute(_NOTIFY_TRIGGER)


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.execute("DROP TRIGGER outbox_events_notify ON outbox_events")
        op.execute("DROP FUNCTION commerce_outbox_notify()")
    op.drop_table("event_relay")
    op.drop_table("event_sequences")
    op.drop_index("ix_outbox_events_store_feed", table_name="outbox_events")
    op.drop_index("ix_outbox_events_feed_position", table_name="outbox_events")
    op.drop_index("ix_outbox_events_unplaced", table_name="outbox_events")
    op.drop_table("outbox_events")
