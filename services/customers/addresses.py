"""The customers service layer for addresses: a customer's postal addresses and their
default flags. Every change locks the customer's row first, which serialises the
changes of one customer's addresses and keeps the address limit and the single
defaults exact."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from services.core.db.counters import next_store_number
from services.core.db.engine import utc_now
from services.core.db.idempotency import RequestKey, claim, remember
from services.core.db.unit_of_work import TenantDatabase
from services.core.domain.errors import FailedPrecondition, NotFound
from services.customers import queries
from services.customers.models import AddressSnapshot
from services.customers.rules import (
    MAX_ADDRESSES_PER_CUSTOMER,
    address_values,
    check_address_id,
    check_customer_id,
    valid_values,
)

ADDRESS_COUNTER = "customer_address"
# Operation name of the idempotency keys of CreateCustomerAddress; stored, so never
# rename it.
CREATE_ADDRESS = "customers.CreateCustomerAddress"


class AddressService:
    def __init__(self, database: TenantDatabase) -> None:
        self._db = database

    async def create_address(
        self, store_id: int, customer_id: int, fields: dict[str, Any], *, request_id: str = ""
    ) -> AddressSnapshot:
        values = valid_values(address_values, "address", {"country_code": ""} | fields)
        key = RequestKey.parse(CREATE_ADDRESS, request_id, {"customer_id": customer_id} | values)
        async with self._db.writing(store_id) as uow:
            if (earlier := await claim(uow, key)) is not None:
                address = await queries.get_address(uow, earlier)
                if address is None:  # deleted since: the request's result is gone
                    raise NotFound("address", str(earlier))
                return address
            check_customer_id(customer_id)
            await queries.get_customer_for_update(uow, customer_id)
            if await queries.count_addresses(uow, customer_id) >= MAX_ADDRESSES_PER_CUSTOMER:
                raise FailedPrecondition(
                    f"a customer has at most {MAX_ADDRESSES_PER_CUSTOMER} addresses",
                    reason="ADDRESS_LIMIT_REACHED",
                    metadata={"limit": MAX_ADDRESSES_PER_CUSTOMER},
                )
            address_id = await next_store_number(uow, ADDRESS_COUNTER)
            await queries.clear_other_defaults(uow, customer_id, address_id, values)
            now = utc_now()
            address = await queries.insert_address(
                uow,
                values
                | {
                    "customer_id": customer_id,
                    "address_id": address_id,
                    "created_at": now,
                    "updated_at": now,
                },
            )
            await remember(uow, key, address_id)
            await uow.commit()
        return address

    async def update_address(
        self, store_id: int, customer_id: int, address_id: int, changes: dict[str, Any]
    ) -> AddressSnapshot:
        values = valid_values(address_values, "address", changes)
        async with self._db.writing(store_id) as uow:
            check_customer_id(customer_id)
            await queries.get_customer_for_update(uow, customer_id)
            check_address_id(address_id)
            address = await queries.get_customer_address(uow, customer_id, address_id)
            await queries.clear_other_defaults(uow, customer_id, address_id, values)
            changed = await queries.change_address(
                uow, replace(address, **values, updated_at=utc_now())
            )
            await uow.commit()
        return changed

    async def delete_address(self, store_id: int, customer_id: int, address_id: int) -> None:
        async with self._db.writing(store_id) as uow:
            check_customer_id(customer_id)
            check_address_id(address_id)
            await queries.delete_address(uow, customer_id, address_id)
            await uow.commit()

    async def list_addresses(self, store_id: int, customer_id: int) -> list[AddressSnapshot]:
        async with self._db.reading(store_id) as uow:
            check_customer_id(customer_id)
            await queries.get_customer(uow, customer_id)
            return await queries.addresses_of(uow, customer_id)
