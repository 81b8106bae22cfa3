"""The loyalty service layer: a customer's balance and tier, and the movements that
add and redeem points. Plain values in, snapshots or domain errors out; each call is
one unit of work on its store, its statements in services.loyalty.queries and its
rules in services.loyalty.rules. No gRPC here, so it is testable without a server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from services.core.db.counters import next_store_number
from services.core.db.engine import utc_now
from services.core.db.idempotency import RequestKey, claim, erase_fingerprints, remember
from services.core.db.unit_of_work import TenantDatabase, UnitOfWork
from services.core.domain.customer_metrics import CustomerMetric
from services.customers.api import (
    CustomerSnapshot,
    check_customer_id,
    get_customer,
    lock_active_customer,
)
from services.loyalty import queries
from services.loyalty.events import (
    MODULE,
    LoyaltyPointsAdded,
    LoyaltyPointsRedeemed,
    loyalty_subject,
)
from services.loyalty.models import MovementSnapshot
from services.loyalty.rules import (
    Standing,
    history_size,
    insufficient_points,
    validated_movement,
)

MOVEMENT_COUNTER = "loyalty_movement"
# Operation names of the idempotency keys; stored, so never rename them.
ADD_POINTS = "loyalty.AddLoyaltyPoints"
REDEEM_POINTS = "loyalty.RedeemLoyaltyPoints"
# Ledger movements read at a time for an export.
EXPORT_BATCH = 1000


@dataclass(frozen=True)
class CustomerLoyalty:
    customer: CustomerSnapshot
    standing: Standing
    # Newest first.
    recent_movements: list[MovementSnapshot]


@dataclass(frozen=True)
class Movement:
    """A recorded movement and the account right after the call (or, for a retried
    request, as it is now)."""

    movement: MovementSnapshot
    standing: Standing


class LoyaltyService:
    def __init__(self, database: TenantDatabase) -> None:
        self._db = database

    async def get_customer_loyalty(
        self, store_id: int, customer_id: int, *, history_limit: int = 0
    ) -> CustomerLoyalty:
        check_customer_id(customer_id)
        limit = history_size(history_limit)
        async with self._db.reading(store_id) as uow:
            customer = await get_customer(uow, customer_id)
            standing = await queries.get_standing(uow, customer_id)
            recent = await queries.recent_movements(uow, customer_id, limit)
        return CustomerLoyalty(customer, standing, recent)

    async def add_points(
        self, store_id: int, customer_id: int, points: int, reason: str, *, request_id: str = ""
    ) -> Movement:
        return await self._move(store_id, customer_id, points, reason, request_id, ADD_POINTS)

    async def redeem_points(
        self, store_id: int, customer_id: int, points: int, reason: str, *, request_id: str = ""
    ) -> Movement:
        return await self._move(store_id, customer_id, points, reason, request_id, REDEEM_POINTS)

    async def _move(
        self,
        store_id: int,
        customer_id: int,
        points: int,
        reason: str,
        request_id: str,
        operation: str,
    ) -> Movement:
        reason = validated_movement(customer_id, points, reason)
        delta = -points if operation == REDEEM_POINTS else points
        request = {"customer_id": customer_id, "points": delta, "reason": reason}
        key = RequestKey.parse(operation, request_id, request)
        async with self._db.writing(store_id) as uow:
            if (earlier := await claim(uow, key)) is not None:
                return await _recorded(uow, earlier)
            await lock_active_customer(uow, customer_id, to="move loyalty points")
            now = utc_now()
            standing = await queries.move_balance(uow, customer_id, delta, now)
            if standing is None:
                balance = (await queries.get_standing(uow, customer_id)).points_balance
                raise insufficient_points(balance, -delta)
            # Late, so the store's counter row stays locked only briefly. Every
            # movement locks its account before the counter: no lock cycle.
            movement = MovementSnapshot(
                store_id=store_id,
                movement_id=await next_store_number(uow, MOVEMENT_COUNTER),
                customer_id=customer_id,
                points=delta,
                balance_after=standing.points_balance,
                reason=reason,
                created_at=now,
            )
            await queries.insert_movement(uow, movement)
            moved = LoyaltyPointsRedeemed if delta < 0 else LoyaltyPointsAdded
            # The account's update time: `now`, written with the balance.
            updated_at = standing.updated_at or now
            uow.record(moved(movement, standing.lifetime_points, updated_at))
            await remember(uow, key, movement.movement_id)
            await uow.commit()
        return Movement(movement, standing)


async def _recorded(uow: UnitOfWork, movement_id: int) -> Movement:
    """A movement recorded before (a retried request), with the account as it is now."""
    movement = await queries.get_movement(uow, movement_id)
    if movement is None:  # the idempotency key outlived its movement: a bug
        raise LookupError(f"loyalty movement {movement_id} of store {uow.store_id} is missing")
    return Movement(movement, await queries.get_standing(uow, movement.customer_id))


class LoyaltyMetricsProvider:
    """The loyalty module's CustomerMetricsProvider (services.core.domain.customer_metrics):
    GetCustomerMetrics shows a customer's points without customers knowing loyalty."""

    source = "loyalty"

    def __init__(self, database: TenantDatabase) -> None:
        self._db = database

    async def customer_metrics(self, store_id: int, customer_id: int) -> list[CustomerMetric]:

        async def read(uow: UnitOfWork) -> Standing:
            await get_customer(uow, customer_id)  # NOT_FOUND if none
            return await queries.get_standing(uow, customer_id)

        standing = await self._db.reading_stale_ok(store_id, read)  # a statistic: may lag
        return [
            CustomerMetric("points_balance", "Loyalty points", standing.points_balance),
            CustomerMetric("lifetime_points", "Lifetime loyalty points", standing.lifetime_points),
            CustomerMetric("tier", "Loyalty tier (1 bronze to 4 platinum)", int(standing.tier)),
        ]


class LoyaltyEraser:
    """The loyalty module's CustomerEraser (services.core.db.customer_data): what
    EraseCustomer removes from the customer's loyalty data, in the erasure's
    transaction. The ledger, otherwise never changed, keeps every movement with its
    points and balances (the balance still sums up); only the reasons, free text,
    are emptied, in the movements and their past events, with the fingerprints of
    the request_ids that made them (digests of the requests, reasons included)."""

    source = "loyalty"

    async def erase_customer(self, uow: UnitOfWork, customer_id: int) -> None:
        movement_ids = await queries.erase_customer_reasons(uow, customer_id)
        for operation in (ADD_POINTS, REDEEM_POINTS):
            await erase_fingerprints(uow, operation, movement_ids)
        uow.redact_events(MODULE, [loyalty_subject(customer_id)])


async def loyalty_account(uow: UnitOfWork, customer_id: int) -> Standing | None:
    """The customer's account as loyalty keeps it, read in `uow`; None when the
    customer never had a movement (loyalty then keeps nothing about them)."""
    return await queries.get_account(uow, customer_id)


async def ledger_batches(
    uow: UnitOfWork, customer_id: int, batch: int = EXPORT_BATCH
) -> AsyncIterator[list[MovementSnapshot]]:
    """Every movement of the customer's ledger, oldest first, `batch` at a time,
    read in `uow` (the export's snapshot) as the caller asks for them."""
    after_id = 0
    while True:
        movements = await queries.movements_after(uow, customer_id, after_id, batch)
        if movements:
            yield movements
        if len(movements) < batch:
            return
        after_id = movements[-1].movement_id
