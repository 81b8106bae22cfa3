"""The customers service layer: creating, changing, listing and authenticating
customers. Plain values in, snapshots or domain errors out; each call is one unit of
work on its store, its statements in services.customers.queries and its rules in
services.customers.rules. No gRPC here, so it is testable without a server."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any

from services.core.db.counters import next_store_number
from services.core.db.customer_data import CustomerDataRegistry
from services.core.db.engine import utc_now
from services.core.db.idempotency import RequestKey, claim, erase_fingerprints, remember
from services.core.db.unit_of_work import TenantDatabase, UnitOfWork
from services.core.domain import validation
from services.core.domain.customer_metrics import CustomerMetric, CustomerMetricsRegistry
from services.core.domain.errors import (
    Aborted,
    InvalidArgument,
    ResourceExhausted,
    Unauthenticated,
    Violations,
)
from services.core.domain.etags import check_etag
from services.core.domain.pagination import PageTokenCodec, resolve_page_size
from services.core.domain.passwords import PasswordHasher, password_problem
from services.core.events.feed_snapshots import FeedSnapshot, FeedSnapshots
from services.customers import queries
from services.customers.events import (
    MODULE,
    CustomerCreated,
    CustomerErased,
    CustomerStatusChanged,
    CustomerUpdated,
    customer_subject,
)
from services.customers.models import MAX_TAGS, CustomerSnapshot
from services.customers.rules import (
    CREATE_ADDRESS,
    CUSTOMER_WRITABLE_FIELDS,
    LoginPolicy,
    caller_subject,
    changed_fields,
    check_batch_customer_ids,
    check_customer_id,
    check_export_after,
    check_not_erased,
    contains_pattern,
    customer_not_found,
    customer_number,
    customer_values,
    email_subject,
    erased_email_key,
    filter_tag,
    first_missing,
    joined_tags,
    login_key,
    too_many_tags,
    valid_tags,
    valid_values,
)

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
# ExportCustomers reads (and sends) this many customers at a time, the next batch only
# once the caller took the last: a slow reader holds one batch in the server.
EXPORT_BATCH = 500

CUSTOMER_COUNTER = "customer"
# Operation name of the idempotency keys of CreateCustomer; stored, so never rename it.
CREATE_CUSTOMER = "customers.CreateCustomer"

INVALID_CREDENTIALS = "invalid email or password"


def too_many_logins(wait: timedelta) -> ResourceExhausted:
    """The refusal of a throttled login: the same whichever subject is throttled and
    whether or not the email exists."""
    return ResourceExhausted(
        "too many failed logins; try again later",
        reason="TOO_MANY_LOGIN_ATTEMPTS",
        retry_after=wait,
    )


@dataclass(frozen=True)
class NewCustomer:
    email: str
    password: str = ""
    first_name: str = ""
    last_name: str = ""
    phone: str = ""
    marketing_consent: bool = False
    preferred_language: str = ""
    tags: Sequence[str] = ()


@dataclass(frozen=True)
class CustomerPage:
    customers: list[CustomerSnapshot]
    next_page_token: str


class CustomerExport:
    """An export in progress: the store's customers as of one snapshot, and the feed
    cursor that snapshot is consistent at."""

    def __init__(
        self,
        snapshot: FeedSnapshot,
        *,
        active: bool | None,
        erased: bool,
        tag: str,
        after_id: int,
    ) -> None:
        self._snapshot = snapshot
        self._filters: dict[str, Any] = {"active": active, "erased": erased, "tag": tag}
        self._after_id = after_id
        self.event_cursor = snapshot.cursor

    async def batches(self) -> AsyncGenerator[list[CustomerSnapshot]]:
        """The customers in id order, EXPORT_BATCH at a time, each batch read once
        the last was taken; the first batch even when empty."""
        after_id = self._after_id
        while True:
            batch = await queries.customers_page(
                self._snapshot, after_id, EXPORT_BATCH, **self._filters
            )
            yield batch
            if len(batch) < EXPORT_BATCH:
                return
            after_id = batch[-1].customer_id


class CustomerService:
    def __init__(
        self,
        database: TenantDatabase,
        passwords: PasswordHasher,
        page_tokens: PageTokenCodec,
        metrics: CustomerMetricsRegistry | None = None,
        login_policy: LoginPolicy | None = None,
        customer_data: CustomerDataRegistry | None = None,
        snapshots: FeedSnapshots | None = None,
    ) -> None:
        self._db = database
        self._snapshots = snapshots or FeedSnapshots(database)
        self._login_policy = login_policy or LoginPolicy()
        self._passwords = passwords
        self._page_tokens = page_tokens
        # Filled by the modules that contribute customer metrics, never by this one.
        self._metrics = metrics or CustomerMetricsRegistry()
        # ... and the modules that keep data about customers (erasers, exporters).
        self._customer_data = customer_data or CustomerDataRegistry()

    async def create_customer(
        self, store_id: int, new: NewCustomer, *, request_id: str = ""
    ) -> CustomerSnapshot:
        problems = Violations()
        profile = {name: value for name, value in asdict(new).items() if name != "password"}
        values = customer_values(problems, profile.items())
        if new.password and (problem := password_problem(new.password)):
            problems.add("password", problem)
        problems.raise_if_any()
        # Without tags, the fingerprint a create had before tags existed: a retry
        # across the upgrade still matches.
        fingerprinted = (
            values if values["tags"] else {k: v for k, v in values.items() if k != "tags"}
        )
        key = RequestKey.parse(CREATE_CUSTOMER, request_id, fingerprinted)
        # bcrypt runs before the transaction, so no connection waits on it.
        hashed_password = await self._passwords.hash(new.password) if new.password else None
        async with self._db.writing(store_id) as uow:
            if (earlier := await claim(uow, key)) is not None:
                return await queries.get_customer(uow, earlier)
            await queries.ensure_email_free(uow, values["email_key"])
            customer_id = await next_store_number(uow, CUSTOMER_COUNTER)
            now = utc_now()
            customer = await queries.insert_customer(
                uow,
                values
                | {
                    "customer_id": customer_id,
                    "customer_number": customer_number(customer_id),
                    "hashed_password": hashed_password,
                    "is_active": True,
                    "revision": 1,
                    "created_at": now,
                    "updated_at": now,
                    "erased_at": None,
                },
            )
            await queries.sync_tags(uow, customer_id, "", customer.tags)
            uow.record(CustomerCreated(customer))
            await remember(uow, key, customer_id)
            await uow.commit()
        return customer

    async def get_customer(self, store_id: int, customer_id: int) -> CustomerSnapshot:
        async with self._db.reading(store_id) as uow:
            check_customer_id(customer_id)
            return await queries.get_customer(uow, customer_id)

    async def batch_get_customers(
        self, store_id: int, customer_ids: Sequence[int]
    ) -> list[CustomerSnapshot]:
        """The customers of `customer_ids` in that order, a repeated id repeated; NOT_FOUND
        naming the first id (in that order) the store has no customer of."""
        async with self._db.reading(store_id) as uow:
            check_batch_customer_ids(customer_ids)
            found = await queries.customers_by_id(uow, list(dict.fromkeys(customer_ids)))
            if (missing := first_missing(customer_ids, found)) is not None:
                raise customer_not_found(missing)  # in the store's scope: named in it
        return [found[customer_id] for customer_id in customer_ids]

    async def update_customer(
        self, store_id: int, customer_id: int, changes: dict[str, Any], *, etag: str = ""
    ) -> CustomerSnapshot:
        values = valid_values(customer_values, "customer", changes)
        async with self._db.writing(store_id) as uow:
            check_customer_id(customer_id)
            # The row lock makes the etag check and the change one atomic step.
            customer = await queries.get_customer_for_update(uow, customer_id)
            check_not_erased(customer)
            check_etag("customer", customer.revision, etag)
            if values.get("email_key", customer.email_key) != customer.email_key:
                await queries.ensure_email_free(uow, values["email_key"])
            changed = await queries.change_profile(uow, customer_id, asdict(customer) | values)
            await queries.sync_tags(uow, customer_id, customer.tags, changed.tags)
            # An update that writes every field with its value still takes a new
            # revision (and etag), as it always did, but changes nothing to tell.
            if fields := changed_fields(customer, changed, CUSTOMER_WRITABLE_FIELDS):
                uow.record(CustomerUpdated(changed, fields))
            await uow.commit()
        return changed

    async def list_customers(
        self,
        store_id: int,
        *,
        page_size: int = 0,
        page_token: str = "",
        active: bool | None = None,
        query: str = "",
        tag: str = "",
        erased: bool = False,
    ) -> CustomerPage:
        """A page of the store's customers in id order; `active` True (False): the
        active (inactive, not erased) ones; `erased`: the erased ones."""
        size = resolve_page_size(page_size, default=DEFAULT_PAGE_SIZE, maximum=MAX_PAGE_SIZE)
        problems = Violations()
        needle = validation.search_text(problems, "query", query)
        tag = filter_tag(problems, "tag", tag)
        problems.raise_if_any()
        scope: dict[str, Any] = {
            "list": "customers",
            "store_id": store_id,
            "active": active,
            "query": needle,
        }
        # Only when set: the tokens of the other listings stay what they were.
        if tag:
            scope["tag"] = tag
        if erased:
            scope["erased"] = True
        (after_id,) = self._page_tokens.decode(page_token, scope) if page_token else (0,)
        pattern = contains_pattern(needle) if needle else ""

        async def read(uow: UnitOfWork) -> list[CustomerSnapshot]:
            return await queries.customers_page(
                uow, after_id, size + 1, active=active, erased=erased, pattern=pattern, tag=tag
            )

        # A list may lag a little: the read replica's when there is one.
        customers = await self._db.reading_stale_ok(store_id, read)
        page, token = self._page_tokens.cut(customers, size, scope, lambda last: [last.customer_id])
        return CustomerPage(page, token)

    async def add_customer_tags(
        self, store_id: int, customer_id: int, tags: Sequence[str], *, etag: str = ""
    ) -> CustomerSnapshot:
        """The customer with `tags` added (those it has are kept once); more than
        MAX_TAGS in all is FAILED_PRECONDITION (TOO_MANY_TAGS)."""
        wanted = valid_tags("tags", tags)
        async with self._db.writing(store_id) as uow:
            check_customer_id(customer_id)
            customer = await queries.get_customer_for_update(uow, customer_id)
            check_etag("customer", customer.revision, etag)
            check_not_erased(customer)
            new = set(customer.tag_list).union(wanted)
            if len(new) > MAX_TAGS:
                raise too_many_tags(customer_id, len(new))
            return await self._write_tags(uow, customer, joined_tags(new))

    async def remove_customer_tags(
        self, store_id: int, customer_id: int, tags: Sequence[str], *, etag: str = ""
    ) -> CustomerSnapshot:
        """The customer without `tags` (those it does not have are ignored)."""
        unwanted = valid_tags("tags", tags)
        async with self._db.writing(store_id) as uow:
            check_customer_id(customer_id)
            customer = await queries.get_customer_for_update(uow, customer_id)
            check_etag("customer", customer.revision, etag)
            check_not_erased(customer)
            new = set(customer.tag_list).difference(unwanted)
            return await self._write_tags(uow, customer, joined_tags(new))

    @staticmethod
    async def _write_tags(
        uow: UnitOfWork, customer: CustomerSnapshot, tags: str
    ) -> CustomerSnapshot:
        """Gives the customer (read FOR UPDATE in `uow`) the tags `tags`, in customers
        and customer_tags, and commits; the same tags again change nothing (no new
        revision, no event)."""
        if tags == customer.tags:
            return customer
        changed = await queries.change_tags(uow, customer.customer_id, tags)
        await queries.sync_tags(uow, customer.customer_id, customer.tags, tags)
        uow.record(CustomerUpdated(changed, ("tags",)))
        await uow.commit()
        return changed

    @asynccontextmanager
    async def export_customers(
        self,
        store_id: int,
        *,
        active: bool | None = None,
        erased: bool = False,
        tag: str = "",
        after_customer_id: int = 0,
    ) -> AsyncIterator[CustomerExport]:
        """Every customer of the store with ids above `after_customer_id`, filtered as
        list_customers filters (`active`, `erased`, `tag`), as of one snapshot
        consistent with the event feed at the export's `event_cursor`
        (services.core.events.feed_snapshots). The snapshot's connections are
        released when the block ends."""
        problems = Violations()
        tag = filter_tag(problems, "tag", tag)
        check_export_after(problems, "after_customer_id", after_customer_id)
        problems.raise_if_any()
        async with self._snapshots.snapshot(store_id) as snapshot:
            yield CustomerExport(
                snapshot, active=active, erased=erased, tag=tag, after_id=after_customer_id
            )

    async def set_customer_status(
        self, store_id: int, customer_id: int, active: bool, *, etag: str = ""
    ) -> CustomerSnapshot:
        async with self._db.writing(store_id) as uow:
            check_customer_id(customer_id)
            customer = await queries.get_customer_for_update(uow, customer_id)
            check_not_erased(customer)
            check_etag("customer", customer.revision, etag)
            if customer.is_active == active:
                return customer
            changed = await queries.change_status(uow, customer_id, active)
            uow.record(CustomerStatusChanged(changed, was_active=customer.is_active))
            await uow.commit()
        return changed

    async def authenticate(
        self, store_id: int, email: str, password: str, *, caller: str
    ) -> CustomerSnapshot:
        """The customer whose email and password these are. `caller` names who asks
        (a caller token's name or an address): brute-force protection counts failures
        per email and per caller, in the database, so every process shares the counts."""
        # A login the password threads cannot serve in time is refused before it
        # costs a database read.
        self._passwords.admit()
        key = login_key(email)
        subjects = (email_subject(email, key), caller_subject(caller))
        async with self._db.reading(store_id) as uow:
            # Before bcrypt: a refused guess costs no password thread.
            throttles = await queries.login_throttles(uow, *subjects)
            if wait := self._login_policy.wait(subjects[0], throttles, utc_now()):
                raise too_many_logins(wait)
            customer = None
            if key is not None:
                customer = await queries.find_customer_by_email_key(uow, key)
        # The password is checked even when the account cannot sign in, so that every
        # failure costs one bcrypt check and none reveals whether the email exists.
        matches = await self._passwords.verify(
            password, customer.hashed_password if customer else None
        )
        if customer is None or not matches or not customer.is_active:
            await self._count_login_failure(store_id, subjects)
            raise Unauthenticated(INVALID_CREDENTIALS, reason="INVALID_CREDENTIALS")
        if any(throttle.subject == subjects[0] for throttle in throttles):
            async with self._db.writing(store_id) as uow:
                await queries.forget_login_failures(uow, subjects[0])
                await uow.commit()
        return customer

    async def _count_login_failure(self, store_id: int, subjects: tuple[str, str]) -> None:
        """Counts a failure of each subject in a transaction of its own, committed
        although the login fails; then prunes the store's counts whose window passed
        (in a second transaction: deleting rows that concurrent failures are counting
        while holding its own would risk a deadlock)."""
        now = utc_now()
        window_floor = now - self._login_policy.window
        async with self._db.writing(store_id) as uow:
            # Always in the same order, so two of these never wait on each other.
            for subject in sorted(subjects):
                await queries.count_login_failure(uow, subject, now, window_floor)
            await uow.commit()
        async with self._db.writing(store_id) as uow:
            await queries.prune_login_failures(uow, window_floor)
            await uow.commit()

    async def change_password(
        self, store_id: int, customer_id: int, current_password: str, new_password: str
    ) -> CustomerSnapshot:
        if problem := password_problem(new_password):
            raise InvalidArgument.of("new_password", problem)
        self._passwords.admit()
        customer = await self.get_customer(store_id, customer_id)
        check_not_erased(customer)
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
        async with self._db.writing(store_id) as uow:
            changed = await queries.change_password(uow, customer_id, old_hash, new_hash)
            if changed is None or changed.erased_at is not None:
                # Erased since it was read: without a password before, the hash
                # condition held, and the erased customer must not keep this one
                # (raising rolls it back).
                check_not_erased(await queries.get_customer(uow, customer_id))
                raise Aborted(
                    "the password was changed concurrently; try again",
                    reason="CONCURRENT_PASSWORD_CHANGE",
                )
            # The event tells that the password changed, never what it is: of the
            # customer's fields only has_password can change, and only the first time.
            uow.record(CustomerUpdated(changed, () if old_hash is not None else ("has_password",)))
            await uow.commit()
        return changed

    async def erase_customer(self, store_id: int, customer_id: int) -> CustomerSnapshot:
        """Erases the customer's personal data in every mounted module, in one
        transaction: each registered eraser (orders, loyalty, ...) first, then the
        customer's own; then records CustomerErased. An eraser that raises refuses
        the erasure and nothing of it is written. An erased customer is returned as
        it is: a second erasure changes nothing and records nothing."""
        async with self._db.writing(store_id) as uow:
            check_customer_id(customer_id)
            # Locked: no change of the customer (nor, through customers.api's share
            # lock, a new order or movement of another module) interleaves.
            customer = await queries.get_customer_for_update(uow, customer_id)
            if customer.erased_at is not None:
                return customer
            for eraser in self._customer_data.erasers:
                await eraser.erase_customer(uow, customer_id)
            erased = await _erase_own_data(uow, customer)
            assert erased.erased_at is not None  # just set
            uow.record(CustomerErased(store_id, customer_id, erased.erased_at))
            await uow.commit()
        return erased

    async def customer_metrics(
        self, store_id: int, customer_id: int
    ) -> dict[str, list[CustomerMetric]]:
        """What the registered providers know about the customer, by source."""
        await self.get_customer(store_id, customer_id)
        return await self._metrics.collect(store_id, customer_id)


async def _erase_own_data(uow: UnitOfWork, customer: CustomerSnapshot) -> CustomerSnapshot:
    """What the customers module itself keeps of the customer: the personal columns,
    tags and addresses; the login throttle of its email (a digest of the email is
    personal data too); the fingerprints of the request_ids that created the
    customer and its addresses (digests of the requests, email and addresses
    included); and the customer's and its addresses' past events."""
    customer_id = customer.customer_id
    erased, address_ids = await queries.erase_customer(
        uow, customer, erased_email_key(customer_id), utc_now()
    )
    await queries.forget_login_failures(uow, email_subject(customer.email, customer.email_key))
    await erase_fingerprints(uow, CREATE_CUSTOMER, [customer_id])
    await erase_fingerprints(uow, CREATE_ADDRESS, address_ids)
    subject = customer_subject(customer_id)
    # The customer's events, and its addresses' below it (customers/7/addresses/3).
    uow.redact_events(MODULE, [subject], under=subject)
    return erased
