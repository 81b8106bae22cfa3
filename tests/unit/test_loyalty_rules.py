"""The loyalty module's pure rules (services.loyalty.rules): no database, no server."""

from __future__ import annotations

import pytest

from services.core.domain.errors import InvalidArgument
from services.loyalty.rules import (
    MAX_HISTORY,
    MAX_POINTS,
    REASON_MAX,
    TIER_THRESHOLDS,
    Standing,
    Tier,
    history_size,
    insufficient_points,
    validated_movement,
)


@pytest.mark.parametrize(
    ("lifetime", "tier", "next_tier", "to_next"),
    [
        (0, Tier.BRONZE, Tier.SILVER, 1_000),
        (999, Tier.BRONZE, Tier.SILVER, 1),
        (1_000, Tier.SILVER, Tier.GOLD, 4_000),
        (19_999, Tier.GOLD, Tier.PLATINUM, 1),
        (20_000, Tier.PLATINUM, None, 0),
        (10**9, Tier.PLATINUM, None, 0),
    ],
)
def test_the_tier_follows_lifetime_points(lifetime, tier, next_tier, to_next):
    standing = Standing(1, 1, points_balance=0, lifetime_points=lifetime)
    assert (standing.tier, standing.next_tier, standing.points_to_next_tier) == (
        tier,
        next_tier,
        to_next,
    )


def test_tiers_start_in_ascending_order():
    starts = [TIER_THRESHOLDS[tier] for tier in sorted(Tier)]
    assert starts == sorted(set(starts))


def test_a_movement_reason_is_trimmed():
    assert validated_movement(1, 5, "  welcome bonus ") == "welcome bonus"


def test_every_problem_of_a_movement_is_named_at_once():
    with pytest.raises(InvalidArgument) as raised:
        validated_movement(0, MAX_POINTS + 1, " ")
    assert [v.field for v in raised.value.violations] == ["customer_id", "points", "reason"]
    with pytest.raises(InvalidArgument) as raised:
        validated_movement(1, 0, "x" * (REASON_MAX + 1))
    assert [v.field for v in raised.value.violations] == ["points", "reason"]


def test_history_has_a_default_and_a_ceiling():
    assert history_size(0) == 10
    assert history_size(3) == 3
    assert history_size(MAX_HISTORY + 1) == MAX_HISTORY
    with pytest.raises(InvalidArgument):
        history_size(-1)


def test_an_overdraft_names_the_balance_and_the_request():
    error = insufficient_points(40, 50)
    assert error.reason == "INSUFFICIENT_POINTS"
    assert error.metadata == {"points_balance": "40", "points_requested": "50"}
