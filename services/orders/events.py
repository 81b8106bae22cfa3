"""The events of the orders module, as its service layer records them (plain
snapshots; services.orders.messages turns them into their payload messages)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from services.core.db.outbox import DomainEvent
from services.orders.models import OrderSnapshot, OrderStatus

MODULE = "orders"


def order_subject(order_id: int) -> str:
    return f"orders/{order_id}"


@dataclass(frozen=True)
class OrderEvent(DomainEvent):
    module: ClassVar[str] = MODULE

    order: OrderSnapshot

    @property
    def subject(self) -> str:
        return order_subject(self.order.order_id)


@dataclass(frozen=True)
class OrderCreated(OrderEvent):
    """An order was placed."""


@dataclass(frozen=True)
class OrderStatusChanged(OrderEvent):
    """An order moved from `old_status` to its status now."""

    old_status: OrderStatus
