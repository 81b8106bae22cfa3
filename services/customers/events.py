"""The events of the customers module, as its service layer records them (plain
snapshots; services.customers.messages turns them into their payload messages,
which never carry a password or its hash)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar

from services.core.db.outbox import DomainEvent
from services.customers.models import AddressSnapshot, CustomerSnapshot

MODULE = "customers"


def customer_subject(customer_id: int) -> str:
    return f"customers/{customer_id}"


@dataclass(frozen=True)
class CustomerEvent(DomainEvent):
    module: ClassVar[str] = MODULE

    # The customer after the change.
    customer: CustomerSnapshot

    @property
    def subject(self) -> str:
        return customer_subject(self.customer.customer_id)


@dataclass(frozen=True)
class CustomerCreated(CustomerEvent):
    """A customer was created."""


@dataclass(frozen=True)
class CustomerUpdated(CustomerEvent):
    """Fields of a customer changed: `changed_fields` names them as the API does
    ("email", "has_password"), only those whose values differ."""

    changed_fields: tuple[str, ...]


@dataclass(frozen=True)
class CustomerStatusChanged(CustomerEvent):
    """A customer was activated or deactivated; `was_active` is the status before."""

    was_active: bool


@dataclass(frozen=True)
class CustomerErased(DomainEvent):
    """A customer's personal data was erased in every module mounted. Carries none:
    the store, the customer's id and when (consumers holding copies erase theirs)."""

    module: ClassVar[str] = MODULE

    store_id: int
    customer_id: int
    erased_at: datetime

    @property
    def subject(self) -> str:
        return customer_subject(self.customer_id)


def address_subject(customer_id: int, address_id: int) -> str:
    return f"customers/{customer_id}/addresses/{address_id}"


@dataclass(frozen=True)
class AddressEvent(DomainEvent):
    module: ClassVar[str] = MODULE

    # The address after the change.
    address: AddressSnapshot

    @property
    def subject(self) -> str:
        return address_subject(self.address.customer_id, self.address.address_id)


@dataclass(frozen=True)
class CustomerAddressCreated(AddressEvent):
    """An address was added to a customer."""


@dataclass(frozen=True)
class CustomerAddressUpdated(AddressEvent):
    """Fields of an address changed, by a caller or because another address of the
    customer took a default flag from it."""

    changed_fields: tuple[str, ...]


@dataclass(frozen=True)
class CustomerAddressDeleted(DomainEvent):
    """An address was deleted."""

    module: ClassVar[str] = MODULE

    store_id: int
    customer_id: int
    address_id: int

    @property
    def subject(self) -> str:
        return address_subject(self.customer_id, self.address_id)
