"""The customers module's rules, as plain functions of plain values: which fields a
caller may write and how each is checked and normalized, what a customer's etag and
number are. No database and no gRPC here, so each is tested on its own
(tests/unit/test_customer_rules.py)."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import email_validator

from services.core.domain import validation
from services.core.domain.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Violations,
)
from services.core.domain.resource_names import name_in_store
from services.customers.models import (
    DEFAULT_ADDRESS_FLAGS,
    MAX_TAG_LENGTH,
    MAX_TAGS,
    AddressSnapshot,
    CustomerSnapshot,
    ThrottleSnapshot,
)

MAX_ADDRESSES_PER_CUSTOMER = 20
# Operation name of the idempotency keys of CreateCustomerAddress; stored, so never
# rename it.
CREATE_ADDRESS = "customers.CreateCustomerAddress"
# BatchGetCustomers reads 1 to this many customers in one call (AIP-231).
MAX_BATCH_CUSTOMERS = 1000

# The collection ids of the module's resource names (AIP-122):
# stores/{store_id}/customers/{customer_id}/addresses/{address_id}.
CUSTOMERS = "customers"
ADDRESSES = "addresses"

# What UpdateCustomer and UpdateCustomerAddress may change, in the API's field names.
CUSTOMER_WRITABLE_FIELDS = (
    "email",
    "first_name",
    "last_name",
    "phone",
    "marketing_consent",
    "preferred_language",
    "tags",
)
ADDRESS_WRITABLE_FIELDS = (
    "recipient_name",
    "address_line1",
    "address_line2",
    "city",
    "postal_code",
    "region",
    "country_code",
    "phone",
    "default_shipping",
    "default_billing",
)
# country_code is required too: an empty one is not a valid code.
_REQUIRED_ADDRESS_FIELDS = {"recipient_name", "address_line1", "city"}


def check_customer_id(customer_id: int) -> None:
    if customer_id <= 0:
        raise InvalidArgument.of("customer_id", "must be a positive customer id")


def check_address_id(address_id: int) -> None:
    if address_id <= 0:
        raise InvalidArgument.of("address_id", "must be a positive address id")


def check_batch_customer_ids(customer_ids: Sequence[int]) -> None:
    """1 to MAX_BATCH_CUSTOMERS ids, each positive; INVALID_ARGUMENT naming each bad
    one as `customer_ids[i]`."""
    if not 0 < len(customer_ids) <= MAX_BATCH_CUSTOMERS:
        raise InvalidArgument.of("customer_ids", f"must name 1 to {MAX_BATCH_CUSTOMERS} customers")
    problems = Violations()
    for index, customer_id in enumerate(customer_ids):
        if customer_id <= 0:
            problems.add(f"customer_ids[{index}]", "must be a positive customer id")
    problems.raise_if_any()


def first_missing(wanted: Iterable[int], found: Mapping[int, object]) -> int | None:
    """The first id of `wanted`, in its order, that `found` lacks."""
    return next((key for key in wanted if key not in found), None)


def changed_fields(before: object, after: object, names: Iterable[str]) -> tuple[str, ...]:
    """Those of `names` whose values differ between two snapshots of one resource:
    what its update event lists (a field written with its old value is not)."""
    return tuple(name for name in names if getattr(before, name) != getattr(after, name))


def customer_name(store_id: int, customer_id: int) -> str:
    return name_in_store(store_id, CUSTOMERS, customer_id)


def address_name(address: AddressSnapshot) -> str:
    return name_in_store(
        address.store_id, CUSTOMERS, address.customer_id, ADDRESSES, address.address_id
    )


def customer_not_found(customer_id: int) -> NotFound:
    return NotFound("customer", customer_id, collection=CUSTOMERS)


def address_not_found(customer_id: int, address_id: int) -> NotFound:
    return NotFound("address", address_id, collection=ADDRESSES, parent=(CUSTOMERS, customer_id))


def customer_number(customer_id: int) -> str:
    return f"C-{customer_id:06d}"


def email_key(address: str) -> str:
    """The key an email is unique and looked up by: case never makes two customers."""
    return address.lower()


def login_key(email: str) -> str | None:
    """The key a login's email would be stored under; None when no customer could have it."""
    try:
        valid = email_validator.validate_email(email.strip(), check_deliverability=False)
    except email_validator.EmailNotValidError:
        return None
    return email_key(valid.normalized)


def erased_email_key(customer_id: int) -> str:
    """An erased customer's email_key: unique in its store, as the column must be, and
    no email's key (login_key and email_key keep an email's "@"), so the customer's
    email is free again and no login finds the erased customer."""
    return f"erased:{customer_id}"


def check_not_erased(customer: CustomerSnapshot) -> None:
    """FAILED_PRECONDITION (CUSTOMER_ERASED) for a customer whose personal data was
    erased: it can take none again."""
    if customer.erased_at is not None:
        raise FailedPrecondition(
            f"customer {customer.customer_id} is erased",
            reason="CUSTOMER_ERASED",
            metadata={"customer_id": customer.customer_id},
        )


def email_taken() -> AlreadyExists:
    return AlreadyExists(
        "a customer with this email already exists in the store",
        reason="EMAIL_TAKEN",
        metadata={"field": "email"},
    )


def customer_values(problems: Violations, items: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """Validated, normalized column values for the given API fields of a customer
    (an email brings its email_key along)."""
    values: dict[str, Any] = {}
    for name, value in items:
        if name == "email":
            values["email"] = validation.email(problems, name, value)
            values["email_key"] = email_key(values["email"])
        elif name in ("first_name", "last_name"):
            values[name] = validation.text(problems, name, value, max_length=validation.NAME_MAX)
        elif name == "phone":
            values[name] = validation.phone(problems, name, value)
        elif name == "preferred_language":
            values[name] = validation.language_tag(problems, name, value)
        elif name == "marketing_consent":
            values[name] = bool(value)
        elif name == "tags":
            values[name] = joined_tags(tag_set(problems, name, value))
        else:
            raise ValueError(f"not a customer field: {name}")
    return values


def address_values(problems: Violations, items: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """Validated, normalized column values for the given API fields of an address."""
    values: dict[str, Any] = {}
    for name, value in items:
        required = name in _REQUIRED_ADDRESS_FIELDS
        if name in ("recipient_name", "city", "region"):
            values[name] = validation.text(
                problems, name, value, max_length=validation.NAME_MAX, required=required
            )
        elif name in ("address_line1", "address_line2"):
            values[name] = validation.text(
                problems, name, value, max_length=validation.LINE_MAX, required=required
            )
        elif name == "postal_code":
            values[name] = validation.text(
                problems, name, value, max_length=validation.POSTAL_CODE_MAX
            )
        elif name == "country_code":
            values[name] = validation.country_code(problems, name, value)
        elif name == "phone":
            values[name] = validation.phone(problems, name, value)
        elif name in DEFAULT_ADDRESS_FLAGS:
            values[name] = bool(value)
        else:
            raise ValueError(f"not an address field: {name}")
    return values


def valid_values(
    values_of: Callable[[Violations, Iterable[tuple[str, Any]]], dict[str, Any]],
    message: str,
    fields: Mapping[str, Any],
) -> dict[str, Any]:
    """`values_of(fields)`, or INVALID_ARGUMENT naming each bad field as a field of the
    request's `message` ("customer.email")."""
    problems = Violations(prefix=f"{message}.")
    values = values_of(problems, fields.items())
    problems.raise_if_any()
    return values


# -- tags --------------------------------------------------------------------------------------

# What a tag's inner white space becomes one space of.
_WHITE_SPACE = re.compile(r"\s+")
# Longer than this before normalising, no tag can be short enough after it (NFKC
# expands a character to at most 18): refused without normalising megabytes.
_RAW_TAG_MAX = MAX_TAG_LENGTH * 18
# Unicode's control characters (C0, DEL, C1) and lone surrogates, which no text of
# a tag may hold (nor could PostgreSQL store the latter).
_REFUSED_CATEGORIES = frozenset({"Cc", "Cs"})


def normalized_tag(problems: Violations, field: str, value: str) -> str:
    """The tag as stored: Unicode NFKC, case-folded ("ß" matches "SS"), surrounding
    white space removed and each inner run of it made one space; or "" after
    reporting why `value` cannot be a tag (empty, a comma (customers.tags joins
    them with commas), a control character, more than MAX_TAG_LENGTH characters)."""
    if len(value) > _RAW_TAG_MAX:
        problems.add(field, f"must be at most {MAX_TAG_LENGTH} characters")
        return ""
    if any(unicodedata.category(character) in _REFUSED_CATEGORIES for character in value):
        problems.add(field, "must not contain control characters")
        return ""
    # Case folding can leave text that is no longer NFKC: normalised on both sides.
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", value).casefold())
    tag = _WHITE_SPACE.sub(" ", folded).strip()
    if not tag:
        problems.add(field, "must not be empty")
    elif "," in tag:
        problems.add(field, "must not contain commas")
    elif len(tag) > MAX_TAG_LENGTH:
        problems.add(field, f"must be at most {MAX_TAG_LENGTH} characters")
    elif any(unicodedata.category(character) in _REFUSED_CATEGORIES for character in tag):
        problems.add(field, "must not contain control characters")
    else:
        return tag
    return ""


def tag_set(problems: Violations, field: str, values: Iterable[str]) -> list[str]:
    """The distinct normalised tags of `values`, sorted; each bad one reported as
    `field[i]`. A request names at most MAX_TAGS (checked before each is looked at,
    so no request makes more than MAX_TAGS problems)."""
    values = list(values)
    if len(values) > MAX_TAGS:
        problems.add(field, f"must hold at most {MAX_TAGS} tags")
        return []
    tags = {
        normalized_tag(problems, f"{field}[{index}]", value) for index, value in enumerate(values)
    }
    tags.discard("")
    return sorted(tags)


def valid_tags(field: str, values: Iterable[str]) -> list[str]:
    """tag_set of a request's own tag list, or INVALID_ARGUMENT; at least one."""
    problems = Violations()
    tags = tag_set(problems, field, values)
    if not problems.items and not tags:
        problems.add(field, "must hold at least one tag")
    problems.raise_if_any()
    return tags


def filter_tag(problems: Violations, field: str, value: str) -> str:
    """The normalised tag of a list filter; "" (no filter) when `value` is empty."""
    return normalized_tag(problems, field, value) if value else ""


def joined_tags(tags: Iterable[str]) -> str:
    """customers.tags of a set of normalised tags: sorted, comma-joined."""
    return ",".join(sorted(tags))


def too_many_tags(customer_id: int, count: int) -> FailedPrecondition:
    return FailedPrecondition(
        f"a customer has at most {MAX_TAGS} tags; these would make {count}",
        reason="TOO_MANY_TAGS",
        metadata={"customer_id": customer_id, "max_tags": MAX_TAGS},
    )


def contains_pattern(needle: str) -> str:
    """The LIKE pattern (escape character "/") that finds `needle` anywhere, its own
    wildcards taken literally."""
    escaped = needle.replace("/", "//").replace("%", "/%").replace("_", "/_")
    return f"%{escaped}%"


# -- brute-force protection ------------------------------------------------------------------


@dataclass(frozen=True)
class LoginPolicy:
    """How many failed logins one email, and one caller, may have in a store within
    `window` (counted from the window's first failure) before further attempts are
    refused until the window passes. `per_caller` 0: no per-caller limit."""

    per_email: int = 10
    per_caller: int = 100
    window: timedelta = timedelta(minutes=15)

    def wait(
        self, email: str, throttles: Iterable[ThrottleSnapshot], now: datetime
    ) -> timedelta | None:
        """How long until a login may be tried again; None when it may now. `email`
        is the email's subject; the other throttle is the caller's."""
        waits = [
            throttle.window_started_at + self.window - now
            for throttle in throttles
            if throttle.window_started_at + self.window > now
            and 0 < self._limit(throttle.subject == email) <= throttle.failures
        ]
        return max(waits, default=None)

    def _limit(self, of_email: bool) -> int:
        return self.per_email if of_email else self.per_caller


def email_subject(email: str, key: str | None) -> str:
    """The throttle subject of a login's email: its login_key, or for an email no
    customer can have, the email as given. An unknown email is throttled exactly like
    a known one, so the throttle tells nothing about who exists."""
    return "email:" + _digest(key if key is not None else email.strip().lower())


def caller_subject(caller: str) -> str:
    return "caller:" + _digest(caller)


def _digest(text: str) -> str:
    # surrogatepass: a lone surrogate in a hostile email must not fail the hashing.
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


# -- ExportCustomers ----------------------------------------------------------------------


def check_export_after(problems: Violations, field: str, after_customer_id: int) -> None:
    if after_customer_id < 0:
        problems.add(
            field, "must be 0 (from the first customer) or the id of the last customer received"
        )
