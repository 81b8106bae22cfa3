"""A customer's data across modules: the seed's provider pattern (as for metrics,
services.core.domain.customer_metrics) for erasure and export.

Customers knows no module that keeps data about its customers (orders, loyalty,
the next one). Each such module registers, when it is mounted, an eraser (removes
the personal data it keeps about a customer) and an exporter (yields everything
it keeps about a customer). EraseCustomer and ExportCustomerData run them all in
the customers module's unit of work, so an erasure is one transaction and an
export one snapshot, whatever the modules mounted."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from services.core.db.unit_of_work import UnitOfWork


class CustomerEraser(Protocol):
    """What a module implements to take part in EraseCustomer."""

    @property
    def source(self) -> str:
        """The module's name, such as "orders"."""
        ...

    async def erase_customer(self, uow: UnitOfWork, customer_id: int) -> None:
        """Removes the personal data the module keeps about the customer (and the
        copies of it in the module's past events), in `uow`'s transaction. Raising
        refuses the erasure: the whole transaction rolls back."""
        ...


@dataclass(frozen=True, slots=True)
class ExportedRecord:
    """One record of a module about a customer, encoded by the module: a message of
    its own protobuf package (the customers servicer sends it as an Any)."""

    # The message's full name, such as "commerce.orders.v1.Order".
    type_name: str
    payload: bytes


class CustomerExporter(Protocol):
    """What a module implements to take part in ExportCustomerData."""

    @property
    def source(self) -> str:
        """The module's name, such as "orders"."""
        ...

    def export_customer(self, uow: UnitOfWork, customer_id: int) -> AsyncIterator[ExportedRecord]:
        """Everything the module keeps about the customer, read in `uow`; never a
        password or its hash."""
        ...


class CustomerDataRegistry:
    """The erasers and exporters of the modules mounted in this process, in the order
    they were mounted."""

    def __init__(self) -> None:
        self._erasers: dict[str, CustomerEraser] = {}
        self._exporters: dict[str, CustomerExporter] = {}

    def register_eraser(self, eraser: CustomerEraser) -> None:
        if eraser.source in self._erasers:
            raise ValueError(f"a customer eraser for {eraser.source!r} is registered")
        self._erasers[eraser.source] = eraser

    def register_exporter(self, exporter: CustomerExporter) -> None:
        if exporter.source in self._exporters:
            raise ValueError(f"a customer exporter for {exporter.source!r} is registered")
        self._exporters[exporter.source] = exporter

    @property
    def erasers(self) -> Sequence[CustomerEraser]:
        return list(self._erasers.values())

    @property
    def exporters(self) -> Sequence[CustomerExporter]:
        return list(self._exporters.values())
