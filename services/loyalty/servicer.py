"""gRPC face of the loyalty module: CustomerLoyaltyService. It translates protobuf to
plain values and back; rules live in the service layer, errors become statuses in
services.core.rpc.statuses. Messages come from services.loyalty.messages; the customer
is shown with the customers package's own (services.customers.messages)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias

import grpc
from commerce.loyalty.v1 import customer_loyalty_service_pb2 as pb
from commerce.loyalty.v1 import customer_loyalty_service_pb2_grpc

from services.core.modules import ModuleContext
from services.customers.messages import customer_to_proto
from services.loyalty.messages import (
    LoyaltyExporter,
    movement_to_proto,
    register_event_encoders,
    standing_to_proto,
)
from services.loyalty.service import (
    LoyaltyEraser,
    LoyaltyMetricsProvider,
    LoyaltyService,
    Movement,
)

Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"


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
    """Adds CustomerLoyaltyService to `server` and registers the loyalty metrics and
    customer eraser and data exporter; returns the service's full name. Needs the customers
    tables, not the customers servicer."""
    context.customer_metrics.register(LoyaltyMetricsProvider(context.database))
    context.customer_data.register_eraser(LoyaltyEraser())
    context.customer_data.register_exporter(LoyaltyExporter())
    register_event_encoders(context.database.event_encoders)
    customer_loyalty_service_pb2_grpc.add_CustomerLoyaltyServiceServicer_to_server(
        CustomerLoyaltyServicer(LoyaltyService(context.database)), server
    )
    return [pb.DESCRIPTOR.services_by_name["CustomerLoyaltyService"].full_name]
