"""The loyalty module's protobuf messages from its snapshots."""

from __future__ import annotations

from commerce.loyalty.v1 import loyalty_pb2

from services.core.rpc.convert import MessageOf, timestamp
from services.loyalty.models import MovementSnapshot
from services.loyalty.rules import Standing, Tier

_STANDING = MessageOf(loyalty_pb2.CustomerLoyalty, Standing)
_MOVEMENT = MessageOf(loyalty_pb2.LoyaltyMovement, MovementSnapshot)


def standing_to_proto(standing: Standing) -> loyalty_pb2.CustomerLoyalty:
    next_tier = standing.next_tier
    return _STANDING(
        standing,
        tier=_tier(standing.tier),
        next_tier=_tier(next_tier) if next_tier else loyalty_pb2.LOYALTY_TIER_UNSPECIFIED,
        points_to_next_tier=standing.points_to_next_tier,
        update_time=timestamp(standing.updated_at) if standing.updated_at else None,
    )


def movement_to_proto(movement: MovementSnapshot) -> loyalty_pb2.LoyaltyMovement:
    return _MOVEMENT(movement, create_time=timestamp(movement.created_at))


def _tier(tier: Tier) -> loyalty_pb2.LoyaltyTier.ValueType:
    return loyalty_pb2.LoyaltyTier.Value(f"LOYALTY_TIER_{tier.name}")
