"""gRPC face of the loyalty module: CustomerLoyaltyService. It translates protobuf to
plain values and back; rules live in the service layer, errors become statuses in
services.core.rpc.statuses. The customer is shown with the customers package's own
message, converted by services.customers.messages."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias

import grpc
from commerce.loyalty.v1 import customer_loyalty_service_pb2 as pb
from commerce.loyalty.v1 import customer_loyalty_service_pb2_grpc, loyalty_pb2

from services.core.modules import ModuleContext
from services.core.rpc.convert import MessageOf, timestamp
from services.customers.messages import customer_to_proto
from services.loyalty.models import MovementSnapshot
from services.loyalty.rules import Standing, Tier
from services.loyalty.service import LoyaltyMetricsProvider, LoyaltyService, Movement

Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"


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


class CustomerLoyaltyServicer(customer_loyalty_service_pb2_grpc.CustomerLoyaltyServiceServicer):
    def __init__(self, service: LoyaltyService) -> None:
        self._service = service

    async def GetCustomerLoyalty(
        self, request: pb.GetCustomerLoyaltyRequest, context: Context
    ) -> pb.GetCustomerLoyaltyResponse:
        loyalty = await self._service.get_customer_loyalty(
            request.store_id, request.customer_id, history_limit=request.history_limit
        )
        return pb.GetCustomerLoyaltyResponse(
            loyalty=standing_to_proto(loyalty.standing),
            recent_movements=[movement_to_proto(m) for m in loyalty.recent_movements],
            customer=customer_to_proto(loyalty.customer),
        )

    async def AddLoyaltyPoints(
        self, request: pb.AddLoyaltyPointsRequest, context: Context
    ) -> pb.AddLoyaltyPointsResponse:
        return pb.AddLoyaltyPointsResponse(**await self._move(self._service.add_points, request))

    async def RedeemLoyaltyPoints(
        self, request: pb.RedeemLoyaltyPointsRequest, context: Context
    ) -> pb.RedeemLoyaltyPointsResponse:
        moved = await self._move(self._service.redeem_points, request)
        return pb.RedeemLoyaltyPointsResponse(**moved)

    async def _move(
        self,
        move: Callable[..., Awaitable[Movement]],
        request: pb.AddLoyaltyPointsRequest | pb.RedeemLoyaltyPointsRequest,
    ) -> dict[str, Any]:
        """The response's fields for a movement (both requests have the same fields)."""
        moved = await move(
            request.store_id,
            request.customer_id,
            request.points,
            request.reason,
            request_id=request.request_id,
        )
        return {
            "movement": movement_to_proto(moved.movement),
            "loyalty": standing_to_proto(moved.standing),
        }


def mount(server: grpc.aio.Server, context: ModuleContext) -> list[str]:
    """Adds CustomerLoyaltyService to `server` and registers the loyalty metrics;
    returns the service's full name. Needs the customers tables, not the customers
    servicer."""
    context.customer_metrics.register(LoyaltyMetricsProvider(context.database))
    customer_loyalty_service_pb2_grpc.add_CustomerLoyaltyServiceServicer_to_server(
        CustomerLoyaltyServicer(LoyaltyService(context.database)), server
    )
    return [pb.DESCRIPTOR.services_by_name["CustomerLoyaltyService"].full_name]
