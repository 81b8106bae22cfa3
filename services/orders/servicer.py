"""gRPC face of the orders module: OrderService and CustomerOrderService. They
translate requests to plain values and answers to messages (services.orders.messages);
rules live in the service layer, errors become statuses in services.core.rpc.statuses."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TypeAlias

import grpc
from commerce.orders.v1 import customer_order_service_pb2 as customer_orders_pb
from commerce.orders.v1 import (
    customer_order_service_pb2_grpc,
    order_pb2,
    order_service_pb2_grpc,
)
from commerce.orders.v1 import order_service_pb2 as orders_pb
from google.protobuf import timestamp_pb2
from google.protobuf.message import Message

from services.core.domain.errors import InvalidArgument
from services.core.modules import ModuleContext
from services.orders.customer_orders import (
    CustomerOrderService,
    OrderEraser,
    OrderMetricsProvider,
)
from services.orders.messages import (
    PROTO_STATUS,
    OrderExporter,
    order_to_proto,
    orders_to_proto,
    page_fields,
    register_event_encoders,
    stats_to_proto,
)
from services.orders.models import OrderStatus
from services.orders.queries import purge_expired_revisions
from services.orders.rules import NewLineItem, NewOrder, OrderFilter, StatusChange
from services.orders.service import OrderService

Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"

_STATUS_FROM_PROTO: dict[int, OrderStatus] = {
    value: status for status, value in PROTO_STATUS.items()
}


def _new_line(line: order_pb2.OrderLineItem) -> NewLineItem:
    """The line's values; a set `unit_price` wins over the deprecated unit_price_minor."""
    if line.HasField("unit_price"):
        price, currency = line.unit_price.amount_minor, line.unit_price.currency_code
    else:
        price, currency = line.unit_price_minor, None
    return NewLineItem(line.sku, line.name, line.quantity, price, unit_price_currency=currency)


def _new_order(request: orders_pb.CreateOrderRequest) -> NewOrder:
    return NewOrder(
        line_items=[_new_line(line) for line in request.line_items],
        currency_code=request.currency_code,
        customer_id=request.customer_id,
        contact_email=request.contact_email,
    )


def _status_filter(status: int) -> OrderStatus | None:
    """A status filter: UNSPECIFIED means any status."""
    if status == order_pb2.ORDER_STATUS_UNSPECIFIED:
        return None
    return _status(status)


def _status(status: int, field: str = "status") -> OrderStatus:
    if status not in _STATUS_FROM_PROTO:
        names = ", ".join(f"ORDER_STATUS_{known.name}" for known in OrderStatus)
        raise InvalidArgument.of(field, f"must be one of {names}")
    return _STATUS_FROM_PROTO[status]


def _statuses(statuses: Sequence[int]) -> tuple[OrderStatus, ...]:
    return tuple(_status(status, f"statuses[{index}]") for index, status in enumerate(statuses))


def _time(field: str, request: Message) -> datetime | None:
    """The request's Timestamp field as an aware datetime; None when unset."""
    if not request.HasField(field):
        return None
    value: timestamp_pb2.Timestamp = getattr(request, field)
    try:
        return value.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise InvalidArgument.of(field, "is not a valid timestamp") from None


class OrderServicer(order_service_pb2_grpc.OrderServiceServicer):
    def __init__(self, service: OrderService) -> None:
        self._service = service

    async def CreateOrder(
        self, request: orders_pb.CreateOrderRequest, context: Context
    ) -> orders_pb.CreateOrderResponse:
        new = _new_order(request)
        order = await self._service.create_order(
            request.store_id, new, request_id=request.request_id
        )
        return orders_pb.CreateOrderResponse(order=order_to_proto(order))

    async def GetOrder(
        self, request: orders_pb.GetOrderRequest, context: Context
    ) -> orders_pb.GetOrderResponse:
        order = await self._service.get_order(request.store_id, request.order_id)
        return orders_pb.GetOrderResponse(order=order_to_proto(order))

    async def ListOrders(
        self, request: orders_pb.ListOrdersRequest, context: Context
    ) -> orders_pb.ListOrdersResponse:
        filters = OrderFilter(
            status=_status_filter(request.status),
            customer_id=request.customer_id,
            created_from=_time("create_time_start", request),
            created_before=_time("create_time_end", request),
            statuses=_statuses(request.statuses),
            guests_only=request.guests_only,
        )
        page = await self._service.list_orders(
            request.store_id,
            page_size=request.page_size,
            page_token=request.page_token,
            filters=filters,
        )
        return orders_pb.ListOrdersResponse(**page_fields(page))

    async def UpdateOrderStatus(
        self, request: orders_pb.UpdateOrderStatusRequest, context: Context
    ) -> orders_pb.UpdateOrderStatusResponse:
        order = await self._service.update_status(
            request.store_id, request.order_id, _status(request.status)
        )
        return orders_pb.UpdateOrderStatusResponse(order=order_to_proto(order))

    async def PayOrder(
        self, request: orders_pb.PayOrderRequest, context: Context
    ) -> orders_pb.PayOrderResponse:
        change = StatusChange(request.order_id, OrderStatus.PAID, request.etag)
        order = await self._service.change_status(
            request.store_id, change, request_id=request.request_id
        )
        return orders_pb.PayOrderResponse(order=order_to_proto(order))

    async def ShipOrder(
        self, request: orders_pb.ShipOrderRequest, context: Context
    ) -> orders_pb.ShipOrderResponse:
        change = StatusChange(
            request.order_id,
            OrderStatus.SHIPPED,
            request.etag,
            tracking_reference=request.tracking_reference,
        )
        order = await self._service.change_status(
            request.store_id, change, request_id=request.request_id
        )
        return orders_pb.ShipOrderResponse(order=order_to_proto(order))

    async def DeliverOrder(
        self, request: orders_pb.DeliverOrderRequest, context: Context
    ) -> orders_pb.DeliverOrderResponse:
        change = StatusChange(request.order_id, OrderStatus.DELIVERED, request.etag)
        order = await self._service.change_status(
            request.store_id, change, request_id=request.request_id
        )
        return orders_pb.DeliverOrderResponse(order=order_to_proto(order))

    async def CancelOrder(
        self, request: orders_pb.CancelOrderRequest, context: Context
    ) -> orders_pb.CancelOrderResponse:
        change = StatusChange(
            request.order_id, OrderStatus.CANCELLED, request.etag, cancel_reason=request.reason
        )
        order = await self._service.change_status(
            request.store_id, change, request_id=request.request_id
        )
        return orders_pb.CancelOrderResponse(order=order_to_proto(order))


class CustomerOrderServicer(customer_order_service_pb2_grpc.CustomerOrderServiceServicer):
    def __init__(self, service: CustomerOrderService) -> None:
        self._service = service

    async def ListCustomerOrders(
        self, request: customer_orders_pb.ListCustomerOrdersRequest, context: Context
    ) -> customer_orders_pb.ListCustomerOrdersResponse:
        page = await self._service.list_orders(
            request.store_id,
            request.customer_id,
            page_size=request.page_size,
            page_token=request.page_token,
        )
        return customer_orders_pb.ListCustomerOrdersResponse(**page_fields(page))

    async def GetRecentCustomerOrders(
        self, request: customer_orders_pb.GetRecentCustomerOrdersRequest, context: Context
    ) -> customer_orders_pb.GetRecentCustomerOrdersResponse:
        orders = await self._service.recent_orders(
            request.store_id, request.customer_id, request.limit
        )
        return customer_orders_pb.GetRecentCustomerOrdersResponse(orders=orders_to_proto(orders))

    async def GetCustomerOrderCount(
        self, request: customer_orders_pb.GetCustomerOrderCountRequest, context: Context
    ) -> customer_orders_pb.GetCustomerOrderCountResponse:
        count = await self._service.order_count(
            request.store_id, request.customer_id, _status_filter(request.status)
        )
        return customer_orders_pb.GetCustomerOrderCountResponse(order_count=count)

    async def GetCustomerOrderStats(
        self, request: customer_orders_pb.GetCustomerOrderStatsRequest, context: Context
    ) -> customer_orders_pb.GetCustomerOrderStatsResponse:
        stats = await self._service.order_stats(request.store_id, request.customer_id)
        return customer_orders_pb.GetCustomerOrderStatsResponse(stats=stats_to_proto(stats))


def mount(server: grpc.aio.Server, context: ModuleContext) -> list[str]:
    """Adds OrderService and CustomerOrderService to `server`, and registers the
    orders module's customer metrics, customer eraser and customer data exporter;
    returns the services' full names. Needs the customers tables, not the customers
    servicer."""
    statistics = OrderMetricsProvider(context.database)
    context.customer_metrics.register(statistics)
    context.customer_data.register_eraser(OrderEraser())
    context.customer_data.register_exporter(OrderExporter())
    context.retention.register("order revisions", purge_expired_revisions)
    register_event_encoders(context.database.event_encoders)
    order_service_pb2_grpc.add_OrderServiceServicer_to_server(
        OrderServicer(OrderService(context.database, context.page_tokens)), server
    )
    customer_order_service_pb2_grpc.add_CustomerOrderServiceServicer_to_server(
        CustomerOrderServicer(
            CustomerOrderService(context.database, context.page_tokens, statistics)
        ),
        server,
    )
    return [
        orders_pb.DESCRIPTOR.services_by_name["OrderService"].full_name,
        customer_orders_pb.DESCRIPTOR.services_by_name["CustomerOrderService"].full_name,
    ]
