"""The customers service layer: the rules for creating, changing, listing and
authenticating customers and their addresses. Plain values in, models or domain
errors out; no gRPC here, so it is testable without a server."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import email_validator
from sqlalchemy import ColumnElement, String, bindparam, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services.core.customer_metrics import CustomerMetric, CustomerMetricsRegistry
from services.core.database import utc_now
from services.core.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unauthenticated,
    Violations,
)
from services.core.idempotency import RequestKey, create_once, remember
from services.core.pagination import PageTokenCodec, resolve_page_size
from services.core.passwords import PasswordHasher, password_problem
from services.core.sql import Statement, Transaction
from services.core.stores import check_store_id, next_store_number
from services.core.tenancy import TenantDatabase
from services.customers import validation
from services.customers.models import (
    DEFAULT_ADDRESS_FLAGS,
    SNAPSHOT_COLUMNS,
    Customer,
    CustomerAddress,
    CustomerSnapshot,
)

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
MAX_ADDRESSES_PER_CUSTOMER = 20

# GetCustomer, the hottest read: one fixed statement on the fast path (core.sql).
_CUSTOMER_BY_KEY_SELECT = select(*SNAPSHOT_COLUMNS).where(
    Customer.store_id == bindparam("store_id"),
    Customer.customer_id == bindparam("customer_id"),
)
_CUSTOMER_BY_KEY = Statement(_CUSTOMER_BY_KEY_SELECT)

CUSTOMER_COUNTER = "customer"
ADDRESS_COUNTER = "customer_address"

# Operation names of idempotency keys; stored, so never rename them.
CREATE_CUSTOMER = "customers.CreateCustomer"
CREATE_ADDRESS = "customers.CreateCustomerAddress"

# What UpdateCustomer and UpdateCustomerAddress may change, in the API's field names.
CUSTOMER_WRITABLE_FIELDS = (
    "email",
    "first_name",
    "last_name",
    "phone",
    "marketing_consent",
    "preferred_language",
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

INVALID_CREDENTIALS = "invalid email or password"


@dataclass(frozen=True)
class NewCustomer:
    email: str
    password: str = ""
    first_name: str = ""
    last_name: str = ""
    phone: str = ""
    marketing_consent: bool = False
    preferred_language: str = ""


@dataclass(frozen=True)
class CustomerPage:
    customers: list[CustomerSnapshot]
    next_page_token: str


def customer_number(customer_id: int) -> str:
    return f"C-{customer_id:06d}"


def email_key(address: str) -> str:
    return address.lower()


def customer_etag(customer: Customer | CustomerSnapshot) -> str:
    """The customer's version as callers see it (AIP-154): opaque to them."""
    return f"r{customer.revision}"


def _check_etag(customer: Customer, etag: str) -> None:
    if etag and etag != customer_etag(customer):
        raise Aborted(
            "the customer changed since this etag was read; read it again and retry",
            reason="ETAG_MISMATCH",
            metadata={"current_etag": customer_etag(customer)},
        )


def _touch(customer: Customer) -> None:
    """Marks a change: a new update time and a new etag."""
    customer.updated_at = utc_now()
    customer.revision += 1


class CustomerService:
    def __init__(
        self,
        database: TenantDatabase,
        passwords: PasswordHasher,
        page_tokens: PageTokenCodec,
        metrics: CustomerMetricsRegistry | None = None,
    ) -> None:
        self._db = database
        self._passwords = passwords
        self._page_tokens = page_tokens
        # Filled by the modules that contribute customer metrics, never by this one.
        self._metrics = metrics or CustomerMetricsRegistry()

    # -- customers ---------------------------------------------------------------------

    async def create_customer(
        self, store_id: int, new: NewCustomer, *, request_id: str = ""
    ) -> Customer:
        problems = Violations()
        check_store_id(store_id)
        profile = {name: value for name, value in asdict(new).items() if name != "password"}
        values = _customer_values(problems, profile.items())
        if new.password and (problem := password_problem(new.password)):
            problems.add("password", problem)
        problems.raise_if_any()
        key = RequestKey.parse(CREATE_CUSTOMER, request_id, values)
        return await create_once(
            self._db,
            store_id,
            key,
            create=lambda: self._insert_customer(store_id, values, new.password, key),
            load=load_customer,
            # A concurrent request with the same request_id took the email first.
            lost_race=(AlreadyExists, IntegrityError),
        )

    async def _insert_customer(
        self, store_id: int, values: dict[str, Any], password: str, key: RequestKey | None
    ) -> Customer:
        # bcrypt runs before the transaction, so no connection waits on it.
        hashed_password = await self._passwords.hash(password) if password else None
        async with self._db.writing(store_id) as uow:
            await _ensure_email_free(uow.session, store_id, values["email"])
            customer_id = await next_store_number(uow.statements, store_id, CUSTOMER_COUNTER)
            now = utc_now()
            customer = Customer(
                store_id=store_id,
                customer_id=customer_id,
                customer_number=customer_number(customer_id),
                hashed_password=hashed_password,
                is_active=True,
                revision=1,
                created_at=now,
                updated_at=now,
                **values,
            )
            uow.session.add(customer)
            if key:
                await remember(uow.statements, store_id, key, customer_id)
            await _flush_unless_email_taken(uow.session, values["email"])
            await uow.commit()
        return customer

    async def get_customer(self, store_id: int, customer_id: int) -> CustomerSnapshot:
        check_customer_id(customer_id)
        async with self._db.statements(store_id, transaction=False) as statements:
            return await find_customer(statements, store_id, customer_id)

    async def update_customer(
        self, store_id: int, customer_id: int, changes: dict[str, Any], *, etag: str = ""
    ) -> Customer:
        problems = Violations(prefix="customer.")
        values = _customer_values(problems, changes.items())
        problems.raise_if_any()
        async with self._db.writing(store_id) as uow:
            # The row lock makes the etag check and the change one atomic step.
            customer = await load_customer(uow.session, store_id, customer_id, lock="update")
            _check_etag(customer, etag)
            if "email" in values and email_key(values["email"]) != customer.email_key:
                await _ensure_email_free(uow.session, store_id, values["email"])
            for name, value in values.items():
                setattr(customer, name, value)
            _touch(customer)
            await _flush_unless_email_taken(uow.session, values.get("email", ""))
            await uow.commit()
        return customer

    async def list_customers(
        self,
        store_id: int,
        *,
        page_size: int = 0,
        page_token: str = "",
        active: bool | None = None,
        query: str = "",
    ) -> CustomerPage:
        check_store_id(store_id)
        size = resolve_page_size(page_size, default=DEFAULT_PAGE_SIZE, maximum=MAX_PAGE_SIZE)
        problems = Violations()
        needle = validation.search_text(problems, "query", query)
        problems.raise_if_any()
        scope = {"list": "customers", "store_id": store_id, "active": active, "query": needle}
        params: dict[str, Any] = {"store_id": store_id, "after_id": 0, "limit": size + 1}
        if page_token:
            (params["after_id"],) = self._page_tokens.decode(page_token, scope)
        if needle:
            params["pattern"] = f"%{_escape_like(needle)}%"
        async with self._db.statements(store_id, transaction=False) as statements:
            rows = await statements.fetch(_CUSTOMER_PAGES[active, bool(needle)], params)
        page, token = self._page_tokens.cut(
            list(rows), size, scope, lambda last: [last["customer_id"]]
        )
        return CustomerPage([CustomerSnapshot.of(row) for row in page], token)

    async def set_customer_status(
        self, store_id: int, customer_id: int, active: bool, *, etag: str = ""
    ) -> Customer:
        async with self._db.writing(store_id) as uow:
            customer = await load_customer(uow.session, store_id, customer_id, lock="update")
            _check_etag(customer, etag)
            if customer.is_active != active:
                customer.is_active = active
                _touch(customer)
                await uow.commit()
        return customer

    async def authenticate(self, store_id: int, email: str, password: str) -> Customer:
        key = _login_key(email)
        async with self._db.reading(store_id) as uow:
            customer = None
            if key is not None:
                customer = await uow.session.scalar(
                    select(Customer).where(Customer.store_id == store_id, Customer.email_key == key)
                )
        # The password is checked even when the account cannot sign in, so that every
        # failure costs one bcrypt check and none reveals whether the email exists.
        matches = await self._passwords.verify(
            password, customer.hashed_password if customer else None
        )
        if customer is None or not matches or not customer.is_active:
            raise Unauthenticated(INVALID_CREDENTIALS, reason="INVALID_CREDENTIALS")
        return customer

    async def change_password(
        self, store_id: int, customer_id: int, current_password: str, new_password: str
    ) -> Customer:
        if problem := password_problem(new_password):
            raise InvalidArgument.of("new_password", problem)
        async with self._db.reading(store_id) as uow:
            customer = await load_customer(uow.session, store_id, customer_id)
        old_hash = customer.hashed_password
        # bcrypt runs outside any transaction, so no connection waits on it.
        if old_hash is None:
            if current_password:
                raise Unauthenticated(
                    "the customer has no password yet; leave it empty", reason="WRONG_PASSWORD"
                )
        elif not await self._passwords.verify(current_password, old_hash):
            raise Unauthenticated("current_password is wrong", reason="WRONG_PASSWORD")
        new_hash = await self._passwords.hash(new_password)

        unchanged = (
            Customer.hashed_password.is_(None)
            if old_hash is None
            else Customer.hashed_password == old_hash
        )
        async with self._db.writing(store_id) as uow:
            changed: Customer | None = await uow.session.scalar(
                update(Customer)
                .where(
                    Customer.store_id == store_id, Customer.customer_id == customer_id, unchanged
                )
                .values(
                    hashed_password=new_hash,
                    updated_at=utc_now(),
                    revision=Customer.revision + 1,
                )
                .returning(Customer)
            )
            if changed is None:
                raise Aborted(
                    "the password was changed concurrently; try again",
                    reason="CONCURRENT_PASSWORD_CHANGE",
                )
            await uow.commit()
        return changed

    async def customer_metrics(
        self, store_id: int, customer_id: int
    ) -> dict[str, list[CustomerMetric]]:
        """What the registered providers know about the customer, by source."""
        await self.get_customer(store_id, customer_id)
        return await self._metrics.collect(store_id, customer_id)

    # -- addresses ---------------------------------------------------------------------

    async def create_address(
        self, store_id: int, customer_id: int, fields: dict[str, Any], *, request_id: str = ""
    ) -> CustomerAddress:
        problems = Violations(prefix="address.")
        values = _address_values(problems, ({"country_code": ""} | fields).items())
        problems.raise_if_any()
        key = RequestKey.parse(CREATE_ADDRESS, request_id, {"customer_id": customer_id} | values)
        return await create_once(
            self._db,
            store_id,
            key,
            create=lambda: self._insert_address(store_id, customer_id, values, key),
            load=_address_loader,
        )

    async def _insert_address(
        self, store_id: int, customer_id: int, values: dict[str, Any], key: RequestKey | None
    ) -> CustomerAddress:
        async with self._db.writing(store_id) as uow:
            session = uow.session
            # Locking the customer serialises address changes of one customer, which
            # keeps the address limit and the single defaults exact.
            await load_customer(session, store_id, customer_id, lock="update")
            count = (
                await session.execute(
                    select(func.count()).where(
                        CustomerAddress.store_id == store_id,
                        CustomerAddress.customer_id == customer_id,
                    )
                )
            ).scalar_one()
            if count >= MAX_ADDRESSES_PER_CUSTOMER:
                raise FailedPrecondition(
                    f"a customer has at most {MAX_ADDRESSES_PER_CUSTOMER} addresses",
                    reason="ADDRESS_LIMIT_REACHED",
                    metadata={"limit": MAX_ADDRESSES_PER_CUSTOMER},
                )
            address_id = await next_store_number(uow.statements, store_id, ADDRESS_COUNTER)
            await _clear_other_defaults(session, store_id, customer_id, address_id, values)
            now = utc_now()
            address = CustomerAddress(
                store_id=store_id,
                customer_id=customer_id,
                address_id=address_id,
                created_at=now,
                updated_at=now,
                **values,
            )
            session.add(address)
            if key:
                await remember(uow.statements, store_id, key, address_id)
            await session.flush()
            await uow.commit()
        return address

    async def update_address(
        self, store_id: int, customer_id: int, address_id: int, changes: dict[str, Any]
    ) -> CustomerAddress:
        problems = Violations(prefix="address.")
        values = _address_values(problems, changes.items())
        problems.raise_if_any()
        async with self._db.writing(store_id) as uow:
            session = uow.session
            await load_customer(session, store_id, customer_id, lock="update")
            address = await _load_address(session, store_id, customer_id, address_id)
            await _clear_other_defaults(session, store_id, customer_id, address_id, values)
            for name, value in values.items():
                setattr(address, name, value)
            address.updated_at = utc_now()
            await session.flush()
            await uow.commit()
        return address

    async def delete_address(self, store_id: int, customer_id: int, address_id: int) -> None:
        async with self._db.writing(store_id) as uow:
            deleted = await uow.session.scalar(
                delete(CustomerAddress)
                .where(
                    CustomerAddress.store_id == store_id,
                    CustomerAddress.customer_id == customer_id,
                    CustomerAddress.address_id == address_id,
                )
                .returning(CustomerAddress.address_id)
            )
            if deleted is None:
                raise NotFound("address", str(address_id))
            await uow.commit()

    async def list_addresses(self, store_id: int, customer_id: int) -> list[CustomerAddress]:
        async with self._db.reading(store_id) as uow:
            await load_customer(uow.session, store_id, customer_id)
            return list(
                await uow.session.scalars(
                    select(CustomerAddress)
                    .where(
                        CustomerAddress.store_id == store_id,
                        CustomerAddress.customer_id == customer_id,
                    )
                    .order_by(CustomerAddress.address_id)
                )
            )


# -- helpers -----------------------------------------------------------------------------


def _customer_values(problems: Violations, items: Any) -> dict[str, Any]:
    """Validated, normalized column values for the given API fields."""
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
        else:
            raise ValueError(f"not a customer field: {name}")
    return values


def _address_values(problems: Violations, items: Any) -> dict[str, Any]:
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
        elif name in ("default_shipping", "default_billing"):
            values[name] = bool(value)
        else:
            raise ValueError(f"not an address field: {name}")
    return values


def _login_key(email: str) -> str | None:
    """The key a login's email would be stored under; None when no customer could have it."""
    try:
        valid = email_validator.validate_email(email.strip(), check_deliverability=False)
    except email_validator.EmailNotValidError:
        return None
    return email_key(valid.normalized)


def _matches_pattern() -> ColumnElement[bool]:
    """Case-insensitive substring match on email, names, full name and phone, of the
    LIKE pattern bound as "pattern" (escaped with "/": see _escape_like)."""
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


def _escape_like(needle: str) -> str:
    """The needle as literal text inside a LIKE pattern: its own wildcards escaped."""
    return needle.replace("/", "//").replace("%", "/%").replace("_", "/_")


def _customer_page(active: bool | None, search: bool) -> Statement:
    """ListCustomers' page query for one combination of filters: the keyset is the
    customer id, so a page is one range of the primary key however deep."""
    conditions = [
        Customer.store_id == bindparam("store_id"),
        Customer.customer_id > bindparam("after_id"),
    ]
    if active is not None:
        conditions.append(Customer.is_active.is_(active))
    if search:
        conditions.append(_matches_pattern())
    return Statement(
        select(*SNAPSHOT_COLUMNS)
        .where(*conditions)
        .order_by(Customer.customer_id)
        .limit(bindparam("limit"))
    )


_CUSTOMER_PAGES = {
    (active, search): _customer_page(active, search)
    for active in (None, True, False)
    for search in (False, True)
}

_CUSTOMER_FOR_SHARE = Statement(_CUSTOMER_BY_KEY_SELECT.with_for_update(read=True))


def check_customer_id(customer_id: int) -> None:
    if customer_id <= 0:
        raise InvalidArgument.of("customer_id", "must be a positive customer id")


async def load_customer(
    session: AsyncSession,
    store_id: int,
    customer_id: int,
    *,
    lock: Literal["update"] | None = None,
) -> Customer:
    """The store's customer, or NOT_FOUND; with lock="update" its row stays locked to
    the end of the transaction, to change it."""
    check_customer_id(customer_id)
    customer = await session.get(Customer, (store_id, customer_id), with_for_update=bool(lock))
    if customer is None:
        raise NotFound("customer", str(customer_id))
    return customer


async def find_customer(
    statements: Transaction, store_id: int, customer_id: int
) -> CustomerSnapshot:
    """The store's customer, or NOT_FOUND, on the fixed-statement path."""
    return await _snapshot(statements, _CUSTOMER_BY_KEY, store_id, customer_id)


async def share_locked_customer(
    statements: Transaction, store_id: int, customer_id: int
) -> CustomerSnapshot:
    """The store's customer, or NOT_FOUND, its row share-locked (FOR SHARE) to the end
    of the transaction: it stays as it is while another module writes a row that
    references it, such as an order. Core, not the ORM: it is on every order's path."""
    return await _snapshot(statements, _CUSTOMER_FOR_SHARE, store_id, customer_id)


async def _snapshot(
    statements: Transaction, query: Statement, store_id: int, customer_id: int
) -> CustomerSnapshot:
    check_customer_id(customer_id)
    row = await statements.fetch_one(query, {"store_id": store_id, "customer_id": customer_id})
    if row is None:
        raise NotFound("customer", str(customer_id))
    return CustomerSnapshot.of(row)


async def _address_loader(session: AsyncSession, store_id: int, address_id: int) -> CustomerAddress:
    address = await session.get(CustomerAddress, (store_id, address_id))
    if address is None:  # deleted since: the request's result is gone
        raise NotFound("address", str(address_id))
    return address


async def _load_address(
    session: AsyncSession, store_id: int, customer_id: int, address_id: int
) -> CustomerAddress:
    if address_id <= 0:
        raise InvalidArgument.of("address_id", "must be a positive address id")
    address = await session.get(CustomerAddress, (store_id, address_id))
    if address is None or address.customer_id != customer_id:
        raise NotFound("address", str(address_id))
    return address


async def _ensure_email_free(session: AsyncSession, store_id: int, email: str) -> None:
    taken = await session.scalar(
        select(Customer.customer_id).where(
            Customer.store_id == store_id, Customer.email_key == email_key(email)
        )
    )
    if taken is not None:
        raise _email_taken(email)


async def _flush_unless_email_taken(session: AsyncSession, email: str) -> None:
    """Flushes; a concurrent request that took the same email meanwhile loses here,
    on the unique key, with ALREADY_EXISTS instead of a half-written row."""
    try:
        await session.flush()
    except IntegrityError as error:
        if "email_key" in str(error.orig):
            raise _email_taken(email) from None
        raise


def _email_taken(email: str) -> AlreadyExists:
    return AlreadyExists(
        "a customer with this email already exists in the store",
        reason="EMAIL_TAKEN",
        metadata={"field": "email"},
    )


async def _clear_other_defaults(
    session: AsyncSession, store_id: int, customer_id: int, address_id: int, values: dict[str, Any]
) -> None:
    """A new default shipping (billing) address takes the flag from the old one."""
    for flag in DEFAULT_ADDRESS_FLAGS:
        if values.get(flag):
            column = getattr(CustomerAddress, flag)
            await session.execute(
                update(CustomerAddress)
                .where(
                    CustomerAddress.store_id == store_id,
                    CustomerAddress.customer_id == customer_id,
                    CustomerAddress.address_id != address_id,
                    column.is_(True),
                )
                .values({flag: False})
            )
