"""Every statement of the customers module, in one place: fixed Core statements
(services.core.db.statements) that take the unit of work and return snapshots. Each
statement is compiled once; the unit of work binds `store_id` into every one."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    String,
    Table,
    bindparam,
    case,
    delete,
    func,
    or_,
    select,
    true,
    union_all,
    update,
)
from sqlalchemy.exc import IntegrityError

from services.core.db.engine import upsert_insert, utc_now
from services.core.db.statements import (
    DIALECTS,
    Statement,
    in_store,
    insert_row,
    rows_of_keys,
)
from services.core.db.unit_of_work import UnitOfWork
from services.customers.models import (
    ADDRESS_COLUMNS,
    DEFAULT_ADDRESS_FLAGS,
    SNAPSHOT_COLUMNS,
    THROTTLE_COLUMNS,
    AddressSnapshot,
    Customer,
    CustomerAddress,
    CustomerSnapshot,
    CustomerTag,
    LoginThrottle,
    ThrottleSnapshot,
)
from services.customers.rules import (
    ADDRESS_WRITABLE_FIELDS,
    address_not_found,
    customer_not_found,
    email_taken,
)

# -- customers ---------------------------------------------------------------------------

_CUSTOMER_KEY = in_store(Customer, "customer_id")
_CUSTOMER = select(*SNAPSHOT_COLUMNS).where(*_CUSTOMER_KEY)
_GET_CUSTOMER = Statement(_CUSTOMER)
_GET_CUSTOMER_FOR_SHARE = Statement(_CUSTOMER.with_for_update(read=True))
_GET_CUSTOMER_FOR_UPDATE = Statement(_CUSTOMER.with_for_update())
_BY_EMAIL_KEY = in_store(Customer, "email_key")
_FIND_BY_EMAIL_KEY = Statement(select(*SNAPSHOT_COLUMNS).where(*_BY_EMAIL_KEY))
_EMAIL_KEY_OWNER = Statement(select(Customer.customer_id).where(*_BY_EMAIL_KEY))
_INSERT_CUSTOMER = insert_row(cast(Table, Customer.__table__))
# Per dialect: every customer of a list of ids, in one statement.
_CUSTOMERS_OF_IDS = rows_of_keys(Customer, "customer_id", "customer_ids")


def _change(*columns: str, only_if: ColumnElement[bool] | None = None) -> Statement:
    """An UPDATE of one customer (if `only_if` holds) that sets `columns` (bound as
    new_<column>), a new update time and the next revision, and returns the customer."""
    condition = () if only_if is None else (only_if,)
    return Statement(
        update(Customer)
        .where(*_CUSTOMER_KEY, *condition)
        .values(
            {column: bindparam(f"new_{column}") for column in (*columns, "updated_at")}
            | {"revision": Customer.revision + 1}
        )
        .returning(*SNAPSHOT_COLUMNS)
    )


PROFILE_COLUMNS = (
    "email",
    "email_key",
    "first_name",
    "last_name",
    "phone",
    "marketing_consent",
    "preferred_language",
    "tags",
)
_CHANGE_PROFILE = _change(*PROFILE_COLUMNS)
_CHANGE_STATUS = _change("is_active")
_CHANGE_TAGS = _change("tags")
# Only while the hash is still the one the caller checked the current password against.
_CHANGE_PASSWORD = _change(
    "hashed_password",
    only_if=Customer.hashed_password.is_not_distinct_from(
        bindparam("old_hashed_password", type_=String())
    ),
)


async def get_customer(uow: UnitOfWork, customer_id: int) -> CustomerSnapshot:
    """The store's customer, or NOT_FOUND."""
    return await _customer(uow, _GET_CUSTOMER, customer_id)


async def get_customer_for_share(uow: UnitOfWork, customer_id: int) -> CustomerSnapshot:
    """The store's customer, or NOT_FOUND, its row share-locked (FOR SHARE) until the
    transaction ends: it stays as it is while the transaction writes a row of another
    module that references it."""
    return await _customer(uow, _GET_CUSTOMER_FOR_SHARE, customer_id)


async def get_customer_for_update(uow: UnitOfWork, customer_id: int) -> CustomerSnapshot:
    """The store's customer, or NOT_FOUND, its row locked (FOR UPDATE) until the
    transaction ends: checking it and changing it become one atomic step."""
    return await _customer(uow, _GET_CUSTOMER_FOR_UPDATE, customer_id)


async def _customer(uow: UnitOfWork, query: Statement, customer_id: int) -> CustomerSnapshot:
    row = await uow.fetch_one(query, {"customer_id": customer_id})
    if row is None:
        raise customer_not_found(customer_id)
    return CustomerSnapshot.of(row)


async def customers_by_id(uow: UnitOfWork, customer_ids: list[int]) -> dict[int, CustomerSnapshot]:
    """The store's customers among `customer_ids` (distinct ids), by id, in one
    statement; an id without a customer is absent."""
    rows = await uow.fetch(_CUSTOMERS_OF_IDS[uow.dialect], {"customer_ids": customer_ids})
    return {(customer := CustomerSnapshot.of(row)).customer_id: customer for row in rows}


async def find_customer_by_email_key(uow: UnitOfWork, email_key: str) -> CustomerSnapshot | None:
    row = await uow.fetch_one(_FIND_BY_EMAIL_KEY, {"email_key": email_key})
    return None if row is None else CustomerSnapshot.of(row)


async def ensure_email_free(uow: UnitOfWork, email_key: str) -> None:
    """ALREADY_EXISTS when a customer of the store has this email."""
    if await uow.scalar(_EMAIL_KEY_OWNER, {"email_key": email_key}) is not None:
        raise email_taken()


async def insert_customer(uow: UnitOfWork, row: Mapping[str, Any]) -> CustomerSnapshot:
    """Inserts a customer given every column but the store's."""
    async with _email_stays_unique():
        await uow.execute(_INSERT_CUSTOMER, row)
    return CustomerSnapshot(**{**row, "store_id": uow.store_id})


async def change_profile(
    uow: UnitOfWork, customer_id: int, profile: Mapping[str, Any]
) -> CustomerSnapshot:
    """Writes every column of PROFILE_COLUMNS from `profile`."""
    params = {f"new_{column}": profile[column] for column in PROFILE_COLUMNS}
    async with _email_stays_unique():
        return await _changed(uow, _CHANGE_PROFILE, customer_id, params)


async def change_status(uow: UnitOfWork, customer_id: int, active: bool) -> CustomerSnapshot:
    return await _changed(uow, _CHANGE_STATUS, customer_id, {"new_is_active": active})


async def change_tags(uow: UnitOfWork, customer_id: int, tags: str) -> CustomerSnapshot:
    """Writes customers.tags (rules.joined_tags); sync_tags writes customer_tags."""
    return await _changed(uow, _CHANGE_TAGS, customer_id, {"new_tags": tags})


async def change_password(
    uow: UnitOfWork, customer_id: int, old_hash: str | None, new_hash: str
) -> CustomerSnapshot | None:
    """Replaces the password hash if it is still `old_hash`; None if it is not (or the
    customer is gone)."""
    params = {"old_hashed_password": old_hash, "new_hashed_password": new_hash}
    return await _changed_if_found(uow, _CHANGE_PASSWORD, customer_id, params)


async def _changed(
    uow: UnitOfWork, statement: Statement, customer_id: int, params: dict[str, Any]
) -> CustomerSnapshot:
    changed = await _changed_if_found(uow, statement, customer_id, params)
    if changed is None:
        raise customer_not_found(customer_id)
    return changed


async def _changed_if_found(
    uow: UnitOfWork, statement: Statement, customer_id: int, params: dict[str, Any]
) -> CustomerSnapshot | None:
    """Runs one of the _change statements with a new update time; the customer as
    changed, or None when no row matched."""
    row = await uow.fetch_one(
        statement, params | {"customer_id": customer_id, "new_updated_at": utc_now()}
    )
    return None if row is None else CustomerSnapshot.of(row)


# -- erasure --------------------------------------------------------------------------------

# Every personal column emptied (email_key becomes rules.erased_email_key), the
# customer deactivated and stamped erased, with a new revision like any change.
_ERASE_CUSTOMER = Statement(
    update(Customer)
    .where(*_CUSTOMER_KEY)
    .values(
        email="",
        email_key=bindparam("new_email_key"),
        hashed_password=None,
        first_name="",
        last_name="",
        phone="",
        marketing_consent=False,
        preferred_language="",
        tags="",
        is_active=False,
        erased_at=bindparam("new_erased_at"),
        updated_at=bindparam("new_erased_at"),
        revision=Customer.revision + 1,
    )
    .returning(*SNAPSHOT_COLUMNS)
)
_DELETE_ADDRESSES = Statement(
    delete(CustomerAddress)
    .where(*in_store(CustomerAddress, "customer_id"))
    .returning(CustomerAddress.address_id)
)


async def erase_customer(
    uow: UnitOfWork, customer: CustomerSnapshot, erased_email_key: str, erased_at: datetime
) -> tuple[CustomerSnapshot, list[int]]:
    """Empties the customer's personal columns, deletes its tags and addresses; the
    customer as erased and the ids of the addresses deleted."""
    customer_id = customer.customer_id
    await sync_tags(uow, customer_id, customer.tags, "")
    rows = await uow.fetch(_DELETE_ADDRESSES, {"customer_id": customer_id})
    params = {
        "customer_id": customer_id,
        "new_email_key": erased_email_key,
        "new_erased_at": erased_at,
    }
    erased = await _changed(uow, _ERASE_CUSTOMER, customer_id, params)
    return erased, sorted(int(row["address_id"]) for row in rows)


@asynccontextmanager
async def _email_stays_unique() -> AsyncIterator[None]:
    """Turns the unique email key's violation into ALREADY_EXISTS: a concurrent
    request that took the same email between the check and the write loses here
    instead of leaving a half-written row."""
    try:
        yield
    except IntegrityError as error:
        if "email_key" in str(error.orig):
            raise email_taken() from None
        raise


# -- a page of customers --------------------------------------------------------------------


def _matches_pattern() -> ColumnElement[bool]:
    """Case-insensitive substring match on email, names, full name and phone, of the
    LIKE pattern bound as "pattern" (rules.contains_pattern)."""
    pattern = bindparam("pattern", type_=String())
    full_name = func.lower(Customer.first_name + " " + Customer.last_name)
    return or_(
        *(
            column.like(pattern, escape="/")
            for column in (
                Customer.email_key,
                func.lower(Customer.first_name),
                func.lower(Customer.last_name),
                full_name,
                Customer.phone,
            )
        )
    )


def _customer_filters(active: bool | None, search: bool, erased: bool) -> list[ColumnElement[bool]]:
    """ListCustomers' filters but the tag: only the active or the inactive customers
    (`active`), only the erased ones (`erased`), as customers show their status (an
    erased customer is erased, whatever is_active says); only those matching the
    LIKE :pattern (`search`)."""
    conditions: list[ColumnElement[bool]] = []
    if active is not None:
        conditions += [Customer.is_active.is_(active), Customer.erased_at.is_(None)]
    if erased:
        conditions.append(Customer.erased_at.is_not(None))
    if search:
        # An erased customer has nothing left to match (its email_key, a
        # placeholder with its id, would match digits).
        conditions += [_matches_pattern(), Customer.erased_at.is_(None)]
    return conditions


# The (active, search, erased) combinations of the filters a listing may get.
_FILTER_COMBINATIONS = [
    (active, search, False) for active in (None, True, False) for search in (False, True)
] + [(None, search, True) for search in (False, True)]


def _customer_page(active: bool | None, search: bool, erased: bool) -> Statement:
    """ListCustomers' page query for one combination of filters: the keyset is the
    customer id, so a page is one range of the primary key however deep."""
    return Statement(
        select(*SNAPSHOT_COLUMNS)
        .where(
            *in_store(Customer),
            Customer.customer_id > bindparam("after_id"),
            *_customer_filters(active, search, erased),
        )
        .order_by(Customer.customer_id)
        .limit(bindparam("limit"))
    )


_CUSTOMER_PAGES = {filters: _customer_page(*filters) for filters in _FILTER_COMBINATIONS}


async def customers_after(
    uow: UnitOfWork,
    after_id: int,
    limit: int,
    *,
    active: bool | None,
    pattern: str,
    erased: bool = False,
) -> list[CustomerSnapshot]:
    """Up to `limit` customers with ids above `after_id`, in id order; only active (or
    inactive, not erased) ones when `active` says so, only erased ones when `erased`,
    only those matching the LIKE `pattern` unless it is empty."""
    params: dict[str, Any] = {"after_id": after_id, "limit": limit}
    if pattern:
        params["pattern"] = pattern
    rows = await uow.fetch(_CUSTOMER_PAGES[active, bool(pattern), erased], params)
    return [CustomerSnapshot.of(row) for row in rows]


# -- tags ---------------------------------------------------------------------------------

_INSERT_TAG = insert_row(cast(Table, CustomerTag.__table__))
# By the whole primary key: the old set is known from customers.tags, so no
# statement looks for what to delete.
_DELETE_TAG = Statement(delete(CustomerTag).where(*in_store(CustomerTag, "tag", "customer_id")))


async def sync_tags(uow: UnitOfWork, customer_id: int, old: str, new: str) -> None:
    """Makes the customer's customer_tags rows, which are `old` (customers.tags as it
    was), the tags of `new` (as it is now): in the transaction that changed
    customers.tags, so the two never differ."""
    before = set(old.split(",")) if old else set()
    after = set(new.split(",")) if new else set()
    if removed := sorted(before - after):
        await uow.execute_many(
            _DELETE_TAG, [{"tag": tag, "customer_id": customer_id} for tag in removed]
        )
    if added := sorted(after - before):
        await uow.execute_many(
            _INSERT_TAG, [{"tag": tag, "customer_id": customer_id} for tag in added]
        )


def _tagged_customer_page(
    dialect: str, active: bool | None, search: bool, erased: bool
) -> Statement:
    """ListCustomers' page query with the tag filter: one range of customer_tags'
    primary key (store_id, tag, customer_id) walked in customer_id order, each entry
    joined to its customer by the customers' primary key. However deep the page and
    however rare or common the tag, it reads the page's entries (and, with the
    other filters, those they skip) and no more.

    On PostgreSQL each customer is a probe of its own, in a LATERAL subquery that
    OFFSET 0 keeps the planner from flattening (as rows_of_keys does): given a plain
    join, statistics taken while the store was small made it merge the entries with
    every customer of the store. SQLite gets the join, which it always runs that way."""
    entries = CustomerTag.store_id == bindparam("store_id"), CustomerTag.tag == bindparam("tag")
    after = CustomerTag.customer_id > bindparam("after_id")
    filters = _customer_filters(active, search, erased)
    if dialect == "sqlite":
        joined = select(*SNAPSHOT_COLUMNS).join_from(
            CustomerTag,
            Customer,
            (Customer.store_id == CustomerTag.store_id)
            & (Customer.customer_id == CustomerTag.customer_id),
        )
        return Statement(
            joined.where(*entries, after, *filters)
            .order_by(CustomerTag.customer_id)
            .limit(bindparam("limit"))
        )
    tagged = select(CustomerTag.customer_id).where(*entries, after).subquery("tagged")
    customer = (
        select(*SNAPSHOT_COLUMNS)
        .where(*in_store(Customer), Customer.customer_id == tagged.c.customer_id, *filters)
        .offset(0)
        .lateral("customer")
    )
    return Statement(
        select(customer)
        .select_from(tagged)
        .join(customer, true())
        .order_by(tagged.c.customer_id)
        .limit(bindparam("limit"))
    )


# By dialect, then by (active, search, erased) filters.
_TAGGED_CUSTOMER_PAGES = {
    dialect: {filters: _tagged_customer_page(dialect, *filters) for filters in _FILTER_COMBINATIONS}
    for dialect in DIALECTS
}


async def tagged_customers_after(
    uow: UnitOfWork,
    tag: str,
    after_id: int,
    limit: int,
    *,
    active: bool | None,
    pattern: str,
    erased: bool = False,
) -> list[CustomerSnapshot]:
    """customers_after of the customers with the (normalised) `tag`."""
    params: dict[str, Any] = {"tag": tag, "after_id": after_id, "limit": limit}
    if pattern:
        params["pattern"] = pattern
    statement = _TAGGED_CUSTOMER_PAGES[uow.dialect][active, bool(pattern), erased]
    rows = await uow.fetch(statement, params)
    return [CustomerSnapshot.of(row) for row in rows]


async def customers_page(
    uow: UnitOfWork,
    after_id: int,
    limit: int,
    *,
    active: bool | None,
    erased: bool,
    pattern: str = "",
    tag: str = "",
) -> list[CustomerSnapshot]:
    """A page of ListCustomers or a batch of ExportCustomers: customers_after, or
    tagged_customers_after when `tag` (normalised) is given."""
    if tag:
        return await tagged_customers_after(
            uow, tag, after_id, limit, active=active, pattern=pattern, erased=erased
        )
    return await customers_after(
        uow, after_id, limit, active=active, pattern=pattern, erased=erased
    )


# -- addresses ------------------------------------------------------------------------------

_OF_CUSTOMER = in_store(CustomerAddress, "customer_id")
_ADDRESS_KEY = in_store(CustomerAddress, "address_id")
_NEXT_REVISION = {"revision": CustomerAddress.revision + 1}
_ADDRESS = select(*ADDRESS_COLUMNS).where(*_ADDRESS_KEY)
_GET_ADDRESS = Statement(_ADDRESS)
_GET_ADDRESS_FOR_UPDATE = Statement(_ADDRESS.with_for_update())
# ListCustomerAddresses' page: the keyset is the address id, read through the
# (store_id, customer_id, address_id) index.
_ADDRESSES_AFTER = Statement(
    select(*ADDRESS_COLUMNS)
    .where(*_OF_CUSTOMER, CustomerAddress.address_id > bindparam("after_id"))
    .order_by(CustomerAddress.address_id)
    .limit(bindparam("limit"))
)
_COUNT_ADDRESSES = Statement(select(func.count()).where(*_OF_CUSTOMER))
_INSERT_ADDRESS = insert_row(cast(Table, CustomerAddress.__table__))
_CHANGE_ADDRESS = Statement(
    update(CustomerAddress)
    .where(*_ADDRESS_KEY)
    .values(
        {column: bindparam(f"new_{column}") for column in (*ADDRESS_WRITABLE_FIELDS, "updated_at")}
        | _NEXT_REVISION
    )
    .returning(*ADDRESS_COLUMNS)
)
_DELETE_ADDRESS = Statement(
    delete(CustomerAddress)
    .where(*in_store(CustomerAddress, "address_id", "customer_id"))
    .returning(CustomerAddress.address_id)
)
# A new default shipping (billing) address takes the flag from the customer's others,
# which that changes: they get a new revision (and etag) too, and an event each.
_CLEAR_DEFAULT = {
    flag: Statement(
        update(CustomerAddress)
        .where(
            *_OF_CUSTOMER,
            CustomerAddress.address_id != bindparam("address_id"),
            getattr(CustomerAddress, flag).is_(True),
        )
        .values({flag: False} | _NEXT_REVISION)
        .returning(*ADDRESS_COLUMNS)
    )
    for flag in DEFAULT_ADDRESS_FLAGS
}


async def get_address(
    uow: UnitOfWork, address_id: int, *, for_update: bool = False
) -> AddressSnapshot | None:
    """The store's address; with `for_update`, its row locked until the transaction
    ends."""
    query = _GET_ADDRESS_FOR_UPDATE if for_update else _GET_ADDRESS
    row = await uow.fetch_one(query, {"address_id": address_id})
    return None if row is None else AddressSnapshot.of(row)


async def get_customer_address(
    uow: UnitOfWork, customer_id: int, address_id: int, *, for_update: bool = False
) -> AddressSnapshot:
    """The customer's address, or NOT_FOUND (also when it is another customer's)."""
    address = await get_address(uow, address_id, for_update=for_update)
    if address is None or address.customer_id != customer_id:
        raise address_not_found(customer_id, address_id)
    return address


async def addresses_after(
    uow: UnitOfWork, customer_id: int, after_id: int, limit: int
) -> list[AddressSnapshot]:
    """Up to `limit` of the customer's addresses with ids above `after_id`, oldest
    (lowest id) first."""
    params = {"customer_id": customer_id, "after_id": after_id, "limit": limit}
    return [AddressSnapshot.of(row) for row in await uow.fetch(_ADDRESSES_AFTER, params)]


async def count_addresses(uow: UnitOfWork, customer_id: int) -> int:
    return int(await uow.scalar(_COUNT_ADDRESSES, {"customer_id": customer_id}))


async def insert_address(uow: UnitOfWork, row: Mapping[str, Any]) -> AddressSnapshot:
    """Inserts an address given every column but the store's."""
    await uow.execute(_INSERT_ADDRESS, row)
    return AddressSnapshot(**{**row, "store_id": uow.store_id})


async def change_address(uow: UnitOfWork, address: AddressSnapshot) -> AddressSnapshot:
    """Writes the address's writable fields and update time as given."""
    params = {f"new_{name}": getattr(address, name) for name in ADDRESS_WRITABLE_FIELDS}
    params |= {"address_id": address.address_id, "new_updated_at": address.updated_at}
    row = await uow.fetch_one(_CHANGE_ADDRESS, params)
    if row is None:
        raise address_not_found(address.customer_id, address.address_id)
    return AddressSnapshot.of(row)


async def delete_address(uow: UnitOfWork, customer_id: int, address_id: int) -> None:
    params = {"customer_id": customer_id, "address_id": address_id}
    if await uow.scalar(_DELETE_ADDRESS, params) is None:
        raise address_not_found(customer_id, address_id)


async def clear_other_defaults(
    uow: UnitOfWork, customer_id: int, address_id: int, flags: Mapping[str, bool]
) -> list[tuple[str, AddressSnapshot]]:
    """Takes each default flag set in `flags` from the customer's other addresses;
    each flag taken with the address it was taken from, as that left it."""
    cleared: list[tuple[str, AddressSnapshot]] = []
    for flag in DEFAULT_ADDRESS_FLAGS:
        if flags.get(flag):
            params = {"customer_id": customer_id, "address_id": address_id}
            rows = await uow.fetch(_CLEAR_DEFAULT[flag], params)
            cleared += [(flag, AddressSnapshot.of(row)) for row in rows]
    return cleared


# -- failed logins (brute-force protection) -------------------------------------------------

# Two primary-key reads in one round trip: given `subject IN (...)`, a plan made with
# the statistics of a small table walked the store's rows through the window index.
_THROTTLES = Statement(
    union_all(
        *(
            select(*THROTTLE_COLUMNS).where(
                *in_store(LoginThrottle), LoginThrottle.subject == bindparam(subject)
            )
            for subject in ("first_subject", "second_subject")
        )
    )
)
# A window that started at or before `window_floor` has passed: a failure after it
# starts a new window.
_WINDOW_PASSED = LoginThrottle.window_started_at <= bindparam("window_floor")


def _count_failure(dialect: str) -> Statement:
    return Statement(
        upsert_insert(dialect, LoginThrottle)
        .values(
            store_id=bindparam("store_id"),
            subject=bindparam("subject"),
            failures=1,
            window_started_at=bindparam("now"),
        )
        .on_conflict_do_update(
            index_elements=[LoginThrottle.store_id, LoginThrottle.subject],
            set_={
                "failures": case((_WINDOW_PASSED, 1), else_=LoginThrottle.failures + 1),
                "window_started_at": case(
                    (_WINDOW_PASSED, bindparam("now")), else_=LoginThrottle.window_started_at
                ),
            },
        )
    )


# Each database spells an upsert its own way.
_COUNT_FAILURE = {dialect: _count_failure(dialect) for dialect in ("postgresql", "sqlite")}
_FORGET_SUBJECT = Statement(
    delete(LoginThrottle).where(
        *in_store(LoginThrottle), LoginThrottle.subject == bindparam("subject")
    )
)
_PRUNE_THROTTLES = Statement(delete(LoginThrottle).where(*in_store(LoginThrottle), _WINDOW_PASSED))


async def login_throttles(
    uow: UnitOfWork, first_subject: str, second_subject: str
) -> list[ThrottleSnapshot]:
    """The store's failure counts of the two subjects that have any."""
    params = {"first_subject": first_subject, "second_subject": second_subject}
    return [ThrottleSnapshot.of(row) for row in await uow.fetch(_THROTTLES, params)]


async def count_login_failure(
    uow: UnitOfWork, subject: str, now: datetime, window_floor: datetime
) -> None:
    """One more failure of `subject`: the first of a new window when its last window
    started at or before `window_floor`."""
    params = {"subject": subject, "now": now, "window_floor": window_floor}
    await uow.execute(_COUNT_FAILURE[uow.dialect], params)


async def forget_login_failures(uow: UnitOfWork, subject: str) -> None:
    await uow.execute(_FORGET_SUBJECT, {"subject": subject})


async def prune_login_failures(uow: UnitOfWork, window_floor: datetime) -> None:
    """Deletes the store's failure counts whose window has passed."""
    await uow.execute(_PRUNE_THROTTLES, {"window_floor": window_floor})
