"""The customers service layer for addresses: a customer's postal addresses and their
default flags. Every change locks the customer's row first, which serialises the
changes of one customer's addresses and keeps the address limit and the single
defaults exact."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from services.core.db.counters import next_store_number
from services.core.db.engine import utc_now
from services.core.db.idempotency import RequestKey, claim, remember
from services.core.db.unit_of_work import TenantDatabase, UnitOfWork
from services.core.domain.errors import FailedPrecondition
from services.core.domain.etags import check_etag
from services.core.domain.pagination import PageTokenCodec, resolve_page_size
from services.customers import queries
from services.customers.events import (
    CustomerAddressCreated,
    CustomerAddressDeleted,
    CustomerAddressUpdated,
)
from services.customers.models import AddressSnapshot
from services.customers.rules import (
    ADDRESS_WRITABLE_FIELDS,
    CREATE_ADDRESS,
    MAX_ADDRESSES_PER_CUSTOMER,
    address_not_found,
    address_values,
    changed_fields,
    check_address_id,
    check_customer_id,
    check_not_erased,
    valid_values,
)

ADDRESS_COUNTER = "customer_address"

# A page holds every address a customer can have unless the caller asks for fewer.
DEFAULT_PAGE_SIZE = MAX_ADDRESSES_PER_CUSTOMER
MAX_PAGE_SIZE = 100


@dataclass(frozen=True)
class AddressPage:
    addresses: list[AddressSnapshot]
    next_page_token: str


class AddressService:
    def __init__(self, database: TenantDatabase, page_tokens: PageTokenCodec) -> None:
        self._db = database
        self._page_tokens = page_tokens

    async def create_address(
        self, store_id: int, customer_id: int, fields: dict[str, Any], *, request_id: str = ""
    ) -> AddressSnapshot:
        values = valid_values(address_values, "address", {"country_code": ""} | fields)
        key = RequestKey.parse(CREATE_ADDRESS, request_id, {"customer_id": customer_id} | values)
        async with self._db.writing(store_id) as uow:
            if (earlier := await claim(uow, key)) is not None:
                address = await queries.get_address(uow, earlier)
                if address is None:  # deleted since: the request's result is gone
                    raise address_not_found(customer_id, earlier)
                return address
            check_customer_id(customer_id)
            check_not_erased(await queries.get_customer_for_update(uow, customer_id))
            if await queries.count_addresses(uow, customer_id) >= MAX_ADDRESSES_PER_CUSTOMER:
                raise FailedPrecondition(
                    f"a customer has at most {MAX_ADDRESSES_PER_CUSTOMER} addresses",
                    reason="ADDRESS_LIMIT_REACHED",
                    metadata={"limit": MAX_ADDRESSES_PER_CUSTOMER},
                )
            address_id = await next_store_number(uow, ADDRESS_COUNTER)
            await _clear_other_defaults(uow, customer_id, address_id, values)
            now = utc_now()
            address = await queries.insert_address(
                uow,
                values
                | {
                    "customer_id": customer_id,
                    "address_id": address_id,
                    "revision": 1,
                    "created_at": now,
                    "updated_at": now,
                },
            )
            uow.record(CustomerAddressCreated(address))
            await remember(uow, key, address_id)
            await uow.commit()
        return address

    async def update_address(
        self,
        store_id: int,
        customer_id: int,
        address_id: int,
        changes: dict[str, Any],
        *,
        etag: str = "",
    ) -> AddressSnapshot:
        """Changes the address; ABORTED when `etag` is given and the address no longer
        has it (the customer's lock makes the check and the change one step)."""
        values = valid_values(address_values, "address", changes)
        async with self._db.writing(store_id) as uow:
            check_customer_id(customer_id)
            check_not_erased(await queries.get_customer_for_update(uow, customer_id))
            check_address_id(address_id)
            address = await queries.get_customer_address(uow, customer_id, address_id)
            check_etag("address", address.revision, etag)
            await _clear_other_defaults(uow, customer_id, address_id, values)
            changed = await queries.change_address(
                uow, replace(address, **values, updated_at=utc_now())
            )
            # Written with the values it had, the address still takes a new revision
            # (and etag), as it always did, but changes nothing to tell.
            if fields := changed_fields(address, changed, ADDRESS_WRITABLE_FIELDS):
                uow.record(CustomerAddressUpdated(changed, fields))
            await uow.commit()
        return changed

    async def delete_address(
        self, store_id: int, customer_id: int, address_id: int, *, etag: str = ""
    ) -> None:
        """Deletes the address; ABORTED when `etag` is given and the address no longer
        has it (its row stays locked from the check to the delete)."""
        async with self._db.writing(store_id) as uow:
            check_customer_id(customer_id)
            check_address_id(address_id)
            # Locked, so an erasure cannot delete the address between this check
            # and the delete (whose event would name an address erased already).
            check_not_erased(await queries.get_customer_for_update(uow, customer_id))
            if etag:
                address = await queries.get_customer_address(
                    uow, customer_id, address_id, for_update=True
                )
                check_etag("address", address.revision, etag)
            await queries.delete_address(uow, customer_id, address_id)
            uow.record(CustomerAddressDeleted(store_id, customer_id, address_id))
            await uow.commit()

    async def list_addresses(
        self, store_id: int, customer_id: int, *, page_size: int = 0, page_token: str = ""
    ) -> AddressPage:
        """One page of the customer's addresses, oldest first."""
        size = resolve_page_size(page_size, default=DEFAULT_PAGE_SIZE, maximum=MAX_PAGE_SIZE)
        scope = {"list": "customer_addresses", "store_id": store_id, "customer_id": customer_id}
        (after_id,) = self._page_tokens.decode(page_token, scope) if page_token else (0,)
        check_customer_id(customer_id)

        async def read(uow: UnitOfWork) -> list[AddressSnapshot]:
            await queries.get_customer(uow, customer_id)
            return await queries.addresses_after(uow, customer_id, after_id, size + 1)

        # A list may lag a little (a customer not replicated yet is read on the primary).
        addresses = await self._db.reading_stale_ok(store_id, read)
        page, token = self._page_tokens.cut(addresses, size, scope, lambda last: [last.address_id])
        return AddressPage(page, token)


async def _clear_other_defaults(
    uow: UnitOfWork, customer_id: int, address_id: int, values: dict[str, Any]
) -> None:
    """Takes the default flags `values` sets from the customer's other addresses and
    records an update of each address that lost one (one event for an address that
    lost both, as the second statement left it)."""
    lost: dict[int, tuple[AddressSnapshot, tuple[str, ...]]] = {}
    for flag, other in await queries.clear_other_defaults(uow, customer_id, address_id, values):
        flags = lost[other.address_id][1] if other.address_id in lost else ()
        lost[other.address_id] = (other, (*flags, flag))
    for other, flags in lost.values():
        uow.record(CustomerAddressUpdated(other, flags))
