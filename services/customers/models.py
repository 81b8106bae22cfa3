"""Customers and their addresses. Consumer-agnostic: nothing here knows who
references a customer (orders, loyalty, ...); those modules own their relationships.

Every key includes `store_id`, the way Citus distributes a multi-tenant schema: a row
can only ever reference a row of its own store."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from services.core.db.engine import Base, UtcDateTime, utc_now
from services.core.db.snapshots import RowSnapshot, columns_of


class Customer(Base):
    __tablename__ = "customers"

    store_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("stores.id"), primary_key=True)
    # Allocated from the store's counter, so ids are per store and the key is
    # (store_id, customer_id) on every database.
    customer_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    customer_number: Mapped[str] = mapped_column(String(50))
    email: Mapped[str] = mapped_column(String(255))
    # The lower-cased email: uniqueness and lookups ignore case identically on every
    # database (SQLite's lower() only folds ASCII).
    email_key: Mapped[str] = mapped_column(String(320))
    hashed_password: Mapped[str | None] = mapped_column(String(255))
    first_name: Mapped[str] = mapped_column(String(100), default="")
    last_name: Mapped[str] = mapped_column(String(100), default="")
    phone: Mapped[str] = mapped_column(String(50), default="")
    marketing_consent: Mapped[bool] = mapped_column(default=False)
    # RFC 5646 asks for room for 35 characters; the seed's 10 cuts valid tags.
    preferred_language: Mapped[str] = mapped_column(String(35), default="")
    is_active: Mapped[bool] = mapped_column(default=True)
    # Bumped by every change; the API shows it as the customer's etag (AIP-154).
    revision: Mapped[int] = mapped_column(default=1)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now)
    # When EraseCustomer removed the customer's personal data; NULL until then.
    erased_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # The customer's tags, normalised, sorted and joined with commas (a tag has
    # none): read with the row at no extra cost. customer_tags holds them again,
    # one row each, for the tag filter.
    tags: Mapped[str] = mapped_column(Text, default="", server_default="")

    __table_args__ = (
        UniqueConstraint("store_id", "customer_number"),
        UniqueConstraint("store_id", "email_key"),
    )


@dataclass(frozen=True, slots=True)
class CustomerSnapshot(RowSnapshot):
    """A customer as the queries return it: Customer's fields, read-only and without
    the ORM's instrumentation, which cost more CPU to build than the query itself
    took (docs/performance.md)."""

    store_id: int
    customer_id: int
    customer_number: str
    email: str
    email_key: str
    hashed_password: str | None
    first_name: str
    last_name: str
    phone: str
    marketing_consent: bool
    preferred_language: str
    is_active: bool
    revision: int
    created_at: datetime
    updated_at: datetime
    erased_at: datetime | None
    # Comma-joined, as stored; `tag_list` splits them.
    tags: str

    @property
    def tag_list(self) -> list[str]:
        return self.tags.split(",") if self.tags else []


# The customers table's columns a CustomerSnapshot is made of, in its field order.
SNAPSHOT_COLUMNS = columns_of(Customer, CustomerSnapshot)

# The longest tag and the most tags a customer may have.
MAX_TAG_LENGTH = 64
MAX_TAGS = 50


class CustomerTag(Base):
    """One tag of one customer: what ListCustomers' and ExportCustomers' tag filter
    reads, a range of the primary key in customer_id order (keyset paging).
    Written in the same transaction as customers.tags, which it always equals."""

    __tablename__ = "customer_tags"

    store_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    tag: Mapped[str] = mapped_column(String(MAX_TAG_LENGTH), primary_key=True)
    customer_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)

    __table_args__ = (
        ForeignKeyConstraint(
            ["store_id", "customer_id"],
            ["customers.store_id", "customers.customer_id"],
            ondelete="CASCADE",
        ),
    )


# The per-customer "default" flags of addresses; each is on for at most one address.
DEFAULT_ADDRESS_FLAGS = ("default_shipping", "default_billing")


class CustomerAddress(Base):
    __tablename__ = "customer_addresses"

    store_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    address_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    customer_id: Mapped[int] = mapped_column(BigInteger)
    recipient_name: Mapped[str] = mapped_column(String(100))
    address_line1: Mapped[str] = mapped_column(String(255))
    address_line2: Mapped[str] = mapped_column(String(255), default="")
    city: Mapped[str] = mapped_column(String(100))
    postal_code: Mapped[str] = mapped_column(String(20), default="")
    region: Mapped[str] = mapped_column(String(100), default="")
    country_code: Mapped[str] = mapped_column(String(2))
    phone: Mapped[str] = mapped_column(String(50), default="")
    default_shipping: Mapped[bool] = mapped_column(default=False)
    default_billing: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now)
    # Bumped by every change; the API shows it as the address's etag (AIP-154). The
    # server default gives the addresses that existed before it their first revision.
    revision: Mapped[int] = mapped_column(default=1, server_default=text("1"))

    __table_args__ = (
        ForeignKeyConstraint(
            ["store_id", "customer_id"],
            ["customers.store_id", "customers.customer_id"],
            ondelete="CASCADE",
        ),
        Index("ix_customer_addresses_customer", "store_id", "customer_id", "address_id"),
        # At most one default shipping and one default billing address per customer.
        *(
            Index(
                f"uq_customer_addresses_{flag}",
                "store_id",
                "customer_id",
                unique=True,
                postgresql_where=text(flag),
                sqlite_where=text(flag),
            )
            for flag in DEFAULT_ADDRESS_FLAGS
        ),
    )


@dataclass(frozen=True, slots=True)
class AddressSnapshot(RowSnapshot):
    """An address as the queries return it: CustomerAddress's fields, read-only."""

    store_id: int
    address_id: int
    customer_id: int
    recipient_name: str
    address_line1: str
    address_line2: str
    city: str
    postal_code: str
    region: str
    country_code: str
    phone: str
    default_shipping: bool
    default_billing: bool
    created_at: datetime
    updated_at: datetime
    revision: int


ADDRESS_COLUMNS = columns_of(CustomerAddress, AddressSnapshot)


class LoginThrottle(Base):
    """Failed logins of one subject of a store (an email, or a caller) in the current
    window: brute-force protection shared by every process that uses the database.
    A row whose window has passed counts for nothing and is pruned."""

    __tablename__ = "customer_login_throttles"

    store_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("stores.id"), primary_key=True)
    # "email:<sha256 of the email key>" or "caller:<sha256 of the caller>": fixed
    # length, and no copy of an email address in a second table.
    subject: Mapped[str] = mapped_column(String(80), primary_key=True)
    failures: Mapped[int] = mapped_column()
    window_started_at: Mapped[datetime] = mapped_column(UtcDateTime)

    __table_args__ = (
        # Pruning finds the store's rows whose window has passed.
        Index("ix_customer_login_throttles_window", "store_id", "window_started_at"),
    )


@dataclass(frozen=True, slots=True)
class ThrottleSnapshot(RowSnapshot):
    """A LoginThrottle row, read-only."""

    subject: str
    failures: int
    window_started_at: datetime


THROTTLE_COLUMNS = columns_of(LoginThrottle, ThrottleSnapshot)
