"""The loyalty module's rules, as pure functions and values: tiers, what a movement
may be, how much history a caller may ask for. No database and no gRPC here, so
each rule is tested on its own (tests/unit)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import IntEnum

from services.core.domain.errors import FailedPrecondition, InvalidArgument, Violations

MAX_POINTS = 1_000_000_000
REASON_MAX = 200
DEFAULT_HISTORY = 10
MAX_HISTORY = 100


class Tier(IntEnum):
    """Tiers in ascending order; the values match commerce.loyalty.v1.LoyaltyTier."""

    BRONZE = 1
    SILVER = 2
    GOLD = 3
    PLATINUM = 4


# The lifetime points from which each tier starts.
TIER_THRESHOLDS: dict[Tier, int] = {
    Tier.BRONZE: 0,
    Tier.SILVER: 1_000,
    Tier.GOLD: 5_000,
    Tier.PLATINUM: 20_000,
}


@dataclass(frozen=True)
class Standing:
    """A customer's account as a caller sees it; zeros before the first movement."""

    store_id: int
    customer_id: int
    points_balance: int = 0
    lifetime_points: int = 0
    updated_at: datetime | None = None

    @property
    def tier(self) -> Tier:
        return max(tier for tier, start in TIER_THRESHOLDS.items() if self.lifetime_points >= start)

    @property
    def next_tier(self) -> Tier | None:
        return Tier(self.tier + 1) if self.tier < Tier.PLATINUM else None

    @property
    def points_to_next_tier(self) -> int:
        next_tier = self.next_tier
        return 0 if next_tier is None else TIER_THRESHOLDS[next_tier] - self.lifetime_points


def validated_movement(customer_id: int, points: int, reason: str) -> str:
    """The movement's reason, trimmed; INVALID_ARGUMENT naming every problem of the
    request."""
    problems = Violations()
    if customer_id <= 0:
        problems.add("customer_id", "must be a positive customer id")
    if not 1 <= points <= MAX_POINTS:
        problems.add("points", f"must be from 1 to {MAX_POINTS:,}")
    reason = reason.strip()
    if not reason:
        problems.add("reason", "is required")
    elif len(reason) > REASON_MAX:
        problems.add("reason", f"must be at most {REASON_MAX} characters")
    problems.raise_if_any()
    return reason


def history_size(history_limit: int) -> int:
    """How many recent movements to show for a requested `history_limit` (0: the
    default; more than the maximum: the maximum)."""
    if history_limit < 0:
        raise InvalidArgument.of("history_limit", "must not be negative")
    return min(history_limit or DEFAULT_HISTORY, MAX_HISTORY)


def insufficient_points(balance: int, requested: int) -> FailedPrecondition:
    return FailedPrecondition(
        f"the balance is {balance} points: {requested} cannot be redeemed",
        reason="INSUFFICIENT_POINTS",
        metadata={"points_balance": balance, "points_requested": requested},
    )
