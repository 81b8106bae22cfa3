"""The pure parts of EraseCustomer: the erased customer's email key and refusal
(services.customers.rules), and how a recorded payload loses its personal data
(services.core.events.encoding, services.core.db.outbox). No database, no server."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from commerce.customers.v1 import customer_events_pb2, customer_pb2
from hypothesis import given
from hypothesis import strategies as st

from services.core.db.outbox import EventEncoders, keep
from services.core.domain.errors import FailedPrecondition
from services.core.events.encoding import proto_redactor
from services.customers.messages import register_event_encoders
from services.customers.models import CustomerSnapshot
from services.customers.rules import check_not_erased, erased_email_key, login_key

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def customer(erased_at: datetime | None) -> CustomerSnapshot:
    return CustomerSnapshot(
        store_id=1,
        customer_id=7,
        customer_number="C-000007",
        email="",
        email_key=erased_email_key(7),
        hashed_password=None,
        first_name="",
        last_name="",
        phone="",
        marketing_consent=False,
        preferred_language="",
        is_active=False,
        revision=3,
        created_at=NOW,
        updated_at=NOW,
        erased_at=erased_at,
        tags="",
    )


@given(st.integers(min_value=1, max_value=2**63 - 1))
def test_an_erased_email_key_is_no_emails_key(customer_id):
    """No login can find an erased customer, and no new customer's email can clash
    with its key: every email key keeps the email's "@"."""
    key = erased_email_key(customer_id)
    assert "@" not in key
    assert login_key(key) is None
    assert erased_email_key(customer_id + 1) != key


def test_an_erased_customer_is_refused_with_its_reason():
    check_not_erased(customer(None))
    with pytest.raises(FailedPrecondition) as raised:
        check_not_erased(customer(NOW))
    assert raised.value.reason == "CUSTOMER_ERASED"
    assert raised.value.metadata == {"customer_id": "7"}


def test_a_redactor_clears_the_paths_it_names_and_keeps_the_rest():
    message = customer_events_pb2.CustomerUpdated(
        customer=customer_pb2.Customer(
            customer_id=7, email="ann@example.com", first_name="Ann", tags=["vip"], etag="r2"
        )
    )
    message.changed_fields.paths.append("email")
    redact = proto_redactor(
        customer_events_pb2.CustomerUpdated,
        "customer.email",
        "customer.first_name",
        "customer.tags",
    )
    redacted = customer_events_pb2.CustomerUpdated.FromString(redact(message.SerializeToString()))
    assert redacted.customer == customer_pb2.Customer(customer_id=7, etag="r2")
    assert list(redacted.changed_fields.paths) == ["email"]
    # A message without the parent has nothing to clear, and stays as it was.
    empty = customer_events_pb2.CustomerUpdated().SerializeToString()
    assert redact(empty) == empty


def test_every_customers_payload_type_has_a_redactor():
    """EraseCustomer fails, rather than keep what a payload carries, on a type
    without one: every event message customers declares has one."""
    encoders = EventEncoders()
    register_event_encoders(encoders)
    for message in customer_events_pb2.DESCRIPTOR.message_types_by_name.values():
        encoders.redact(message.full_name, b"")
    with pytest.raises(LookupError):
        encoders.redact("commerce.customers.v1.SomethingNew", b"")
    assert keep(b"\x08\x01") == b"\x08\x01"
