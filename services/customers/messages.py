"""Customers' protobuf messages from its snapshots: the one definition of what a
customer looks like on the wire. The customers servicer uses it, and so do the
servicers of consumer modules that show an embedded commerce.customers.v1.Customer
(their service layers never see a message)."""

from __future__ import annotations

from datetime import datetime

from commerce.customers.v1 import customer_events_pb2, customer_pb2
from commerce.type.v1 import money_pb2
from google.protobuf import field_mask_pb2

from services.core.db.outbox import EventEncoders, keep
from services.core.domain.customer_metrics import CustomerMetric, Money
from services.core.domain.etags import etag
from services.core.domain.resource_names import name_in_store
from services.core.events.encoding import proto_encoder, proto_redactor
from services.core.rpc.convert import MessageOf, timestamp
from services.customers.events import (
    CustomerAddressCreated,
    CustomerAddressDeleted,
    CustomerAddressUpdated,
    CustomerCreated,
    CustomerErased,
    CustomerStatusChanged,
    CustomerUpdated,
)
from services.customers.models import AddressSnapshot, CustomerSnapshot
from services.customers.rules import ADDRESSES, CUSTOMERS, address_name, customer_name

_ADDRESS = MessageOf(customer_pb2.CustomerAddress, AddressSnapshot)


def _active_status(active: bool) -> customer_pb2.CustomerStatus.ValueType:
    return customer_pb2.CUSTOMER_STATUS_ACTIVE if active else customer_pb2.CUSTOMER_STATUS_INACTIVE


def _status(customer: CustomerSnapshot) -> customer_pb2.CustomerStatus.ValueType:
    if customer.erased_at is not None:
        return customer_pb2.CUSTOMER_STATUS_ERASED
    return _active_status(customer.is_active)


def customer_to_proto(customer: CustomerSnapshot) -> customer_pb2.Customer:
    # Each field named: the hottest message of all (a page of customers, every order).
    return customer_pb2.Customer(
        store_id=customer.store_id,
        customer_id=customer.customer_id,
        customer_number=customer.customer_number,
        email=customer.email,
        first_name=customer.first_name,
        last_name=customer.last_name,
        phone=customer.phone,
        marketing_consent=customer.marketing_consent,
        preferred_language=customer.preferred_language,
        status=_status(customer),
        has_password=customer.hashed_password is not None,
        create_time=timestamp(customer.created_at),
        update_time=timestamp(customer.updated_at),
        etag=etag(customer.revision),
        name=customer_name(customer.store_id, customer.customer_id),
        erase_time=timestamp(customer.erased_at) if customer.erased_at else None,
        tags=customer.tag_list,
    )


def address_to_proto(address: AddressSnapshot) -> customer_pb2.CustomerAddress:
    return _ADDRESS(
        address,
        create_time=timestamp(address.created_at),
        update_time=timestamp(address.updated_at),
        etag=etag(address.revision),
        name=address_name(address),
    )


def metric_to_proto(
    source: str, metric: CustomerMetric, *, money_values: bool
) -> customer_pb2.CustomerMetric:
    """The metric as the wire shows it; an amount of money as a Money when
    `money_values`, else (for callers written before Money) as minor units in
    int_value beside currency_code."""
    message = customer_pb2.CustomerMetric(source=source, name=metric.name, label=metric.label)
    value = metric.value
    if isinstance(value, datetime):
        message.time_value.CopyFrom(timestamp(value))
    elif isinstance(value, Money):
        if money_values:
            message.money_value.CopyFrom(
                money_pb2.Money(currency_code=value.currency_code, amount_minor=value.amount_minor)
            )
        else:
            message.int_value = value.amount_minor
            message.currency_code = value.currency_code
    elif value is not None:
        message.int_value = value
    return message


# -- events: the customer as customer_to_proto shows it (has_password, never a hash) -------


def _mask(paths: tuple[str, ...]) -> field_mask_pb2.FieldMask:
    return field_mask_pb2.FieldMask(paths=paths)


def _customer_created(event: CustomerCreated) -> customer_events_pb2.CustomerCreated:
    return customer_events_pb2.CustomerCreated(customer=customer_to_proto(event.customer))


def _customer_updated(event: CustomerUpdated) -> customer_events_pb2.CustomerUpdated:
    return customer_events_pb2.CustomerUpdated(
        customer=customer_to_proto(event.customer), changed_fields=_mask(event.changed_fields)
    )


def _customer_status_changed(
    event: CustomerStatusChanged,
) -> customer_events_pb2.CustomerStatusChanged:
    return customer_events_pb2.CustomerStatusChanged(
        customer=customer_to_proto(event.customer),
        old_status=_active_status(event.was_active),
        new_status=_active_status(event.customer.is_active),
    )


def _address_created(event: CustomerAddressCreated) -> customer_events_pb2.CustomerAddressCreated:
    return customer_events_pb2.CustomerAddressCreated(address=address_to_proto(event.address))


def _address_updated(event: CustomerAddressUpdated) -> customer_events_pb2.CustomerAddressUpdated:
    return customer_events_pb2.CustomerAddressUpdated(
        address=address_to_proto(event.address), changed_fields=_mask(event.changed_fields)
    )


def _address_deleted(event: CustomerAddressDeleted) -> customer_events_pb2.CustomerAddressDeleted:
    return customer_events_pb2.CustomerAddressDeleted(
        store_id=event.store_id,
        customer_id=event.customer_id,
        address_id=event.address_id,
        address=name_in_store(
            event.store_id, CUSTOMERS, event.customer_id, ADDRESSES, event.address_id
        ),
    )


def _customer_erased(event: CustomerErased) -> customer_events_pb2.CustomerErased:
    return customer_events_pb2.CustomerErased(
        store_id=event.store_id,
        customer_id=event.customer_id,
        customer=customer_name(event.store_id, event.customer_id),
        erase_time=timestamp(event.erased_at),
    )


# What EraseCustomer empties in the customer and address messages of past events: the
# fields it empties in the rows (ids, numbers, flags, times and etags stay).
CUSTOMER_PERSONAL_FIELDS = (
    "email",
    "first_name",
    "last_name",
    "phone",
    "marketing_consent",
    "preferred_language",
    "tags",
)
ADDRESS_PERSONAL_FIELDS = (
    "recipient_name",
    "address_line1",
    "address_line2",
    "city",
    "postal_code",
    "region",
    "country_code",
    "phone",
)
_CUSTOMER_PATHS = tuple(f"customer.{name}" for name in CUSTOMER_PERSONAL_FIELDS)
_ADDRESS_PATHS = tuple(f"address.{name}" for name in ADDRESS_PERSONAL_FIELDS)


def register_event_encoders(encoders: EventEncoders) -> None:
    """How the customers module's events become their payload messages, and what
    EraseCustomer empties in each."""
    encoders.register(CustomerCreated, proto_encoder(_customer_created))
    encoders.register(CustomerUpdated, proto_encoder(_customer_updated))
    encoders.register(CustomerStatusChanged, proto_encoder(_customer_status_changed))
    encoders.register(CustomerAddressCreated, proto_encoder(_address_created))
    encoders.register(CustomerAddressUpdated, proto_encoder(_address_updated))
    encoders.register(CustomerAddressDeleted, proto_encoder(_address_deleted))
    encoders.register(CustomerErased, proto_encoder(_customer_erased))
    events = customer_events_pb2
    for with_customer in (
        events.CustomerCreated,
        events.CustomerUpdated,
        events.CustomerStatusChanged,
    ):
        encoders.register_redactor(
            with_customer.DESCRIPTOR.full_name, proto_redactor(with_customer, *_CUSTOMER_PATHS)
        )
    for with_address in (events.CustomerAddressCreated, events.CustomerAddressUpdated):
        encoders.register_redactor(
            with_address.DESCRIPTOR.full_name, proto_redactor(with_address, *_ADDRESS_PATHS)
        )
    # Ids and names only.
    for without in (events.CustomerAddressDeleted, events.CustomerErased):
        encoders.register_redactor(without.DESCRIPTOR.full_name, keep)
