"""The orders module's protobuf messages from its snapshots. An order shows its
customer with customers' own message (services.customers.messages): one definition
of what a customer looks like."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from typing import Any

from commerce.customers.v1 import customer_pb2
from commerce.orders.v1 import order_events_pb2, order_pb2
from commerce.type.v1 import money_pb2

from services.core.db.customer_data import ExportedRecord
from services.core.db.outbox import EventEncoders
from services.core.db.unit_of_work import UnitOfWork
from services.core.domain.etags import etag
from services.core.events.encoding import proto_encoder, proto_redactor
from services.core.rpc.convert import timestamp
from services.customers.api import customer_name
from services.customers.messages import customer_to_proto
from services.orders.customer_orders import customer_order_batches
from services.orders.events import OrderCreated, OrderStatusChanged
from services.orders.models import LineItemSnapshot, OrderSnapshot, OrderStatus
from services.orders.rules import CustomerOrderStats, OrderPage

PROTO_STATUS: dict[OrderStatus, order_pb2.OrderStatus.ValueType] = {
    status: order_pb2.OrderStatus.Value(f"ORDER_STATUS_{status.name}") for status in OrderStatus
}


def order_to_proto(
    order: OrderSnapshot, customer: customer_pb2.Customer | None = None
) -> order_pb2.Order:
    """The order's message; `customer` is its customer's message when already built."""
    if customer is None and order.customer is not None:
        customer = customer_to_proto(order.customer)
    return order_pb2.Order(
        name=order_name(order),
        etag=etag(order.revision),
        store_id=order.store_id,
        order_id=order.order_id,
        order_number=order.order_number,
        customer_id=order.customer_id or 0,
        customer=customer,
        status=PROTO_STATUS[OrderStatus(order.status)],
        currency_code=order.currency_code,
        line_items=[_line_to_proto(line, order.currency_code) for line in order.line_items],
        total_minor=order.total_minor,
        total=money(order.currency_code, order.total_minor),
        contact_email=order.contact_email,
        create_time=timestamp(order.created_at),
        update_time=timestamp(order.updated_at),
        tracking_reference=order.tracking_reference,
        cancel_reason=order.cancel_reason,
    )


def order_name(order: OrderSnapshot) -> str:
    """The order's resource name (AIP-122)."""
    return f"stores/{order.store_id}/orders/{order.order_id}"


def money(currency_code: str, amount_minor: int) -> money_pb2.Money:
    return money_pb2.Money(currency_code=currency_code, amount_minor=amount_minor)


def orders_to_proto(orders: Sequence[OrderSnapshot]) -> list[order_pb2.Order]:
    """The orders' messages. The orders of a customer's page share one customer
    object: its message is built once, not once per order."""
    customers: dict[int, customer_pb2.Customer] = {}
    for order in orders:
        if order.customer is not None and id(order.customer) not in customers:
            customers[id(order.customer)] = customer_to_proto(order.customer)
    return [order_to_proto(order, customers.get(id(order.customer))) for order in orders]


def page_fields(page: OrderPage) -> dict[str, Any]:
    """A List response's fields: the page's orders and the next page's token."""
    return {"orders": orders_to_proto(page.orders), "next_page_token": page.next_page_token}


def _line_to_proto(line: LineItemSnapshot, currency_code: str) -> order_pb2.OrderLineItem:
    return order_pb2.OrderLineItem(
        line_number=line.line_number,
        sku=line.sku,
        name=line.name,
        quantity=line.quantity,
        unit_price_minor=line.unit_price_minor,
        line_total_minor=line.line_total_minor,
        unit_price=money(currency_code, line.unit_price_minor),
        line_total=money(currency_code, line.line_total_minor),
    )


def stats_to_proto(stats: CustomerOrderStats) -> order_pb2.CustomerOrderStats:
    return order_pb2.CustomerOrderStats(
        store_id=stats.store_id,
        customer_id=stats.customer_id,
        total_orders=stats.total_orders,
        total_spent=[
            order_pb2.Money(
                currency_code=totals.currency_code, amount_minor=totals.total_spent_minor
            )
            for totals in stats.currencies
        ],
        avg_order_value=[
            order_pb2.Money(
                currency_code=totals.currency_code, amount_minor=totals.avg_order_value_minor
            )
            for totals in stats.currencies
        ],
        total_spent_per_currency=[
            money(totals.currency_code, totals.total_spent_minor) for totals in stats.currencies
        ],
        avg_order_value_per_currency=[
            money(totals.currency_code, totals.avg_order_value_minor) for totals in stats.currencies
        ],
        first_order_time=timestamp(stats.first_order_time) if stats.first_order_time else None,
        last_order_time=timestamp(stats.last_order_time) if stats.last_order_time else None,
    )


def _event_order(order: OrderSnapshot) -> order_pb2.Order:
    """The order as an event carries it: without the deprecated customer copy (an
    event refers to its customer by id and name), which is then never built."""
    return order_to_proto(replace(order, customer=None))


def _customer_name(order: OrderSnapshot) -> str:
    """The name of the order's customer; empty for a guest order."""
    return customer_name(order.store_id, order.customer_id) if order.customer_id else ""


def _order_created(event: OrderCreated) -> order_events_pb2.OrderCreated:
    return order_events_pb2.OrderCreated(
        order=_event_order(event.order), customer=_customer_name(event.order)
    )


def _order_status_changed(event: OrderStatusChanged) -> order_events_pb2.OrderStatusChanged:
    return order_events_pb2.OrderStatusChanged(
        order=_event_order(event.order),
        old_status=PROTO_STATUS[event.old_status],
        new_status=PROTO_STATUS[OrderStatus(event.order.status)],
        customer=_customer_name(event.order),
    )


# What EraseCustomer empties in an order event: what it empties in the order
# (customer_orders.OrderEraser), and the customer copy events of older versions
# carried.
_PERSONAL_PATHS = ("order.contact_email", "order.cancel_reason", "order.customer")


def register_event_encoders(encoders: EventEncoders) -> None:
    """How the orders module's events become their payload messages, and what
    EraseCustomer empties in each."""
    encoders.register(OrderCreated, proto_encoder(_order_created))
    encoders.register(OrderStatusChanged, proto_encoder(_order_status_changed))
    for event in (order_events_pb2.OrderCreated, order_events_pb2.OrderStatusChanged):
        encoders.register_redactor(
            event.DESCRIPTOR.full_name, proto_redactor(event, *_PERSONAL_PATHS)
        )


# -- the customer's data, for CustomerService.ExportCustomerData ---------------------------

ORDER_TYPE = order_pb2.Order.DESCRIPTOR.full_name


class OrderExporter:
    """The orders module's CustomerExporter (services.core.db.customer_data): every
    order of the customer with its lines, oldest first, each a commerce.orders.v1.Order
    without the deprecated customer copy (the export begins with the customer), read
    in batches as the export is sent."""

    source = "orders"

    async def export_customer(
        self, uow: UnitOfWork, customer_id: int
    ) -> AsyncIterator[ExportedRecord]:
        async for orders in customer_order_batches(uow, customer_id):
            for order in orders:
                yield ExportedRecord(ORDER_TYPE, order_to_proto(order).SerializeToString())
