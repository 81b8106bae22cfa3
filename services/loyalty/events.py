"""The events of the loyalty module, as its service layer records them (plain
values; services.loyalty.messages turns them into their payload messages)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar

from services.core.db.outbox import DomainEvent
from services.loyalty.models import MovementSnapshot

MODULE = "loyalty"


def loyalty_subject(customer_id: int) -> str:
    return f"customers/{customer_id}/loyalty"


@dataclass(frozen=True)
class PointsMoved(DomainEvent):
    """A movement and the customer's account right after it: its balance is the
    movement's balance_after, its lifetime points and update time these."""

    module: ClassVar[str] = MODULE

    movement: MovementSnapshot
    lifetime_points: int
    account_updated_at: datetime

    @property
    def subject(self) -> str:
        return loyalty_subject(self.movement.customer_id)


@dataclass(frozen=True)
class LoyaltyPointsAdded(PointsMoved):
    """Points were added to a customer's balance."""


@dataclass(frozen=True)
class LoyaltyPointsRedeemed(PointsMoved):
    """Points were taken from a customer's balance."""
