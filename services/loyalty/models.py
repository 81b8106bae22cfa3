"""Loyalty accounts and their ledger. The loyalty module owns the link to customers:
the foreign key (store_id, customer_id) -> customers lives here.

The balance is a cached sum of the ledger: both change in one transaction, so they
always agree, and the database refuses a negative balance or an empty movement."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    String,
)
from sqlalchemy.orm import Mapped, mapped_column

from services.core.db.engine import Base, UtcDateTime, utc_now
from services.core.db.snapshots import RowSnapshot, columns_of


class LoyaltyAccount(Base):
    """One per customer who ever had a movement; a customer without one has a zero
    balance."""

    __tablename__ = "loyalty_accounts"

    store_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("stores.id"), primary_key=True)
    customer_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    points_balance: Mapped[int] = mapped_column(BigInteger, default=0)
    # Points earned, redemptions not subtracted: decides the tier.
    lifetime_points: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now)

    __table_args__ = (
        ForeignKeyConstraint(
            ["store_id", "customer_id"], ["customers.store_id", "customers.customer_id"]
        ),
        CheckConstraint("points_balance >= 0", name="balance_not_negative"),
        # The balance is earned minus redeemed, so it can never exceed what was earned.
        CheckConstraint("lifetime_points >= points_balance", name="balance_within_lifetime"),
    )


class LoyaltyMovement(Base):
    """A ledger row: never updated, never deleted."""

    __tablename__ = "loyalty_movements"

    store_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    # Allocated from the store's counter, so ids are per store and grow with time.
    movement_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    customer_id: Mapped[int] = mapped_column(BigInteger)
    # Positive: added; negative: redeemed.
    points: Mapped[int] = mapped_column(BigInteger)
    balance_after: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now)

    __table_args__ = (
        ForeignKeyConstraint(
            ["store_id", "customer_id"],
            ["loyalty_accounts.store_id", "loyalty_accounts.customer_id"],
        ),
        CheckConstraint("points <> 0", name="points_not_zero"),
        CheckConstraint("balance_after >= 0", name="balance_after_not_negative"),
        # A customer's history, newest first: one index range scan.
        Index("ix_loyalty_movements_customer", "store_id", "customer_id", "movement_id"),
    )


@dataclass(frozen=True, slots=True)
class MovementSnapshot(RowSnapshot):
    """A ledger row as the queries return it: LoyaltyMovement's fields, without the ORM."""

    store_id: int
    movement_id: int
    customer_id: int
    points: int
    balance_after: int
    reason: str
    created_at: datetime


# The columns a MovementSnapshot is made of, in its field order.
MOVEMENT_COLUMNS = columns_of(LoyaltyMovement, MovementSnapshot)
