"""The customers service layer for ExportCustomerData: everything this server holds
about one customer, from every mounted module, read in one snapshot.

Customers yields its own parts (the profile, then the addresses) and then runs the
exporters the other modules registered while mounting
(services.core.db.customer_data), in mount order, in the same unit of work: the
records of every module agree with each other and with the profile. It knows no
exporter's module: their records arrive encoded."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import TypeAlias

from services.core.db.customer_data import CustomerDataRegistry, ExportedRecord
from services.core.events.feed_snapshots import FeedSnapshots
from services.customers import queries
from services.customers.models import AddressSnapshot, CustomerSnapshot
from services.customers.rules import MAX_ADDRESSES_PER_CUSTOMER, check_customer_id

# The source of the parts customers itself exports.
SOURCE = "customers"


@dataclass(frozen=True, slots=True)
class ModuleRecord:
    """A record of another module, as its exporter encoded it."""

    source: str
    record: ExportedRecord


# One part of an export: the customer, one of its addresses, or a module's record.
ExportPart: TypeAlias = CustomerSnapshot | AddressSnapshot | ModuleRecord


class CustomerDataExport:
    def __init__(self, snapshots: FeedSnapshots, registry: CustomerDataRegistry) -> None:
        self._snapshots = snapshots
        # Filled by the modules that keep data about customers, never by this one.
        self._registry = registry

    async def stream(self, store_id: int, customer_id: int) -> AsyncGenerator[ExportPart, None]:
        """The customer, its addresses (oldest first), then each exporter's records,
        read in one snapshot (services.core.events.feed_snapshots, whose connection is
        never the one SQLite's pool shares) as they are yielded: the snapshot lasts
        until the iterator ends or is closed, and reads on only when the caller asks
        for the next part. INVALID_ARGUMENT for an id that cannot be a customer's,
        NOT_FOUND when the store has none, before the first part. Never a password or
        its hash: the customer goes out as customers' message, which has
        `has_password` only."""
        check_customer_id(customer_id)
        async with self._snapshots.snapshot(store_id) as uow:
            yield await queries.get_customer(uow, customer_id)
            # Every address in one read: a customer has at most this many.
            for address in await queries.addresses_after(
                uow, customer_id, 0, MAX_ADDRESSES_PER_CUSTOMER
            ):
                yield address
            for exporter in self._registry.exporters:
                async for record in exporter.export_customer(uow, customer_id):
                    yield ModuleRecord(exporter.source, record)
