"""The loyalty module's protobuf messages from its snapshots."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from commerce.loyalty.v1 import loyalty_events_pb2, loyalty_pb2

from services.core.db.customer_data import ExportedRecord
from services.core.db.outbox import EventEncoders
from services.core.db.unit_of_work import UnitOfWork
from services.core.events.encoding import proto_encoder, proto_redactor
from services.core.rpc.convert import MessageOf, timestamp
from services.customers.api import customer_name
from services.loyalty.events import LoyaltyPointsAdded, LoyaltyPointsRedeemed, PointsMoved
from services.loyalty.models import MovementSnapshot
from services.loyalty.rules import Standing, Tier
from services.loyalty.service import ledger_batches, loyalty_account

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


def _moved(event: PointsMoved) -> dict[str, Any]:
    """The fields both movement events have."""
    movement = event.movement
    account = Standing(
        movement.store_id,
        movement.customer_id,
        points_balance=movement.balance_after,
        lifetime_points=event.lifetime_points,
        updated_at=event.account_updated_at,
    )
    return {
        "movement": movement_to_proto(movement),
        "loyalty": standing_to_proto(account),
        "customer": customer_name(movement.store_id, movement.customer_id),
    }


def _points_added(event: LoyaltyPointsAdded) -> loyalty_events_pb2.LoyaltyPointsAdded:
    return loyalty_events_pb2.LoyaltyPointsAdded(**_moved(event))


def _points_redeemed(event: LoyaltyPointsRedeemed) -> loyalty_events_pb2.LoyaltyPointsRedeemed:
    return loyalty_events_pb2.LoyaltyPointsRedeemed(**_moved(event))


def register_event_encoders(encoders: EventEncoders) -> None:
    """How the loyalty module's events become their payload messages, and what
    EraseCustomer empties in each (the movement's reason, as in the ledger)."""
    encoders.register(LoyaltyPointsAdded, proto_encoder(_points_added))
    encoders.register(LoyaltyPointsRedeemed, proto_encoder(_points_redeemed))
    for event in (loyalty_events_pb2.LoyaltyPointsAdded, loyalty_events_pb2.LoyaltyPointsRedeemed):
        encoders.register_redactor(
            event.DESCRIPTOR.full_name, proto_redactor(event, "movement.reason")
        )


# -- the customer's data, for CustomerService.ExportCustomerData ---------------------------

LOYALTY_TYPE = loyalty_pb2.CustomerLoyalty.DESCRIPTOR.full_name
MOVEMENT_TYPE = loyalty_pb2.LoyaltyMovement.DESCRIPTOR.full_name


class LoyaltyExporter:
    """The loyalty module's CustomerExporter (services.core.db.customer_data): the
    customer's account as a commerce.loyalty.v1.CustomerLoyalty, then every movement
    of its ledger, oldest first, as a commerce.loyalty.v1.LoyaltyMovement. A customer
    who never had a movement has no account and gets no record: loyalty keeps
    nothing about them (GetCustomerLoyalty shows them zeros it computes)."""

    source = "loyalty"

    async def export_customer(
        self, uow: UnitOfWork, customer_id: int
    ) -> AsyncIterator[ExportedRecord]:
        account = await loyalty_account(uow, customer_id)
        if account is None:
            return
        yield ExportedRecord(LOYALTY_TYPE, standing_to_proto(account).SerializeToString())
        async for movements in ledger_batches(uow, customer_id):
            for movement in movements:
                payload = movement_to_proto(movement).SerializeToString()
                yield ExportedRecord(MOVEMENT_TYPE, payload)
