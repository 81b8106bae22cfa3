"""Customers' public face: the one module of customers that consumer modules (orders,
loyalty, the next one) import for behaviour. It is how "the consumer knows the
provider, the provider knows no consumer" reads in code: customers offers these,
and never learns who calls them.

Consumers may also import `services.customers.models` (for their foreign keys and
joins) and, in their gRPC layer only (messages, servicer),
`services.customers.messages` (to show an embedded commerce.customers.v1.Customer);
nothing else of customers (import-linter contracts in pyproject.toml)."""

from __future__ import annotations

from services.core.db.unit_of_work import UnitOfWork
from services.core.domain.errors import FailedPrecondition
from services.customers import queries
from services.customers.models import CustomerSnapshot
from services.customers.rules import check_customer_id, check_not_erased, customer_name

__all__ = [
    "CustomerSnapshot",
    "check_customer_id",
    "customer_name",
    "get_customer",
    "lock_active_customer",
]


async def get_customer(uow: UnitOfWork, customer_id: int) -> CustomerSnapshot:
    """The store's customer; INVALID_ARGUMENT for an id that cannot be one, NOT_FOUND
    when the store has no such customer."""
    check_customer_id(customer_id)
    return await queries.get_customer(uow, customer_id)


async def lock_active_customer(uow: UnitOfWork, customer_id: int, *, to: str) -> CustomerSnapshot:
    """The store's active customer, share-locked until the transaction ends: it can
    be neither deactivated nor changed while the caller writes a row that references
    it. FAILED_PRECONDITION when the customer is erased (CUSTOMER_ERASED: it can take
    no new data) or inactive (CUSTOMER_INACTIVE); `to` says what they therefore
    cannot do ("place orders")."""
    check_customer_id(customer_id)
    customer = await queries.get_customer_for_share(uow, customer_id)
    check_not_erased(customer)
    if not customer.is_active:
        raise FailedPrecondition(
            f"customer {customer_id} is inactive and cannot {to}",
            reason="CUSTOMER_INACTIVE",
            metadata={"customer_id": customer_id},
        )
    return customer
