"""The loyalty service layer: a customer's balance and tier, and the movements that
add and redeem points. Plain values in, domain objects or domain errors out; no gRPC
here, so it is testable without a server."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import IntEnum

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.core.customer_metrics import CustomerMetric
from services.core.database import upsert_insert, utc_now
from services.core.errors import FailedPrecondition, InvalidArgument, Violations
from services.core.idempotency import RequestKey, create_once, remember
from services.core.sql import Transaction
from services.core.stores import check_store_id, next_store_number
from services.core.tenancy import TenantDatabase
from services.customers.models import Customer
from services.customers.service import check_customer_id, load_customer, share_locked_customer
from services.loyalty.models import LoyaltyAccount, LoyaltyMovement

MAX_POINTS = 1_000_000_000
REASON_MAX = 200
DEFAULT_HISTORY = 10
MAX_HISTORY = 100

MOVEMENT_COUNTER = "loyalty_movement"
# Operation names of the idempotency keys; stored, so never rename them.
ADD_POINTS = "loyalty.AddLoyaltyPoints"
REDEEM_POINTS = "loyalty.RedeemLoyaltyPoints"


class Tier(IntEnum):
    """Tiers in ascending order; the values match commerce.loyalty.v1.LoyaltyTier."""

    BRONZE = 1
    SILVER = 2
    GOLD = 3
    PLATINUM = 4


# The lifetime points from which each tier starts.
TIER_THRESHOLDS: dict[Tier, int] = {
    Tier.BRONZE: 0,
    Tier.SILVER: 1_000,
    Tier.GOLD: 5_000,
    Tier.PLATINUM: 20_000,
}


@dataclass(frozen=True)
class Standing:
    """A customer's account as a caller sees it; zeros before the first movement."""

    store_id: int
    customer_id: int
    points_balance: int = 0
    lifetime_points: int = 0
    updated_at: datetime | None = None

    @property
    def tier(self) -> Tier:
        return max(tier for tier, start in TIER_THRESHOLDS.items() if self.lifetime_points >= start)

    @property
    def next_tier(self) -> Tier | None:
        return Tier(self.tier + 1) if self.tier < Tier.PLATINUM else None

    @property
    def points_to_next_tier(self) -> int:
        next_tier = self.next_tier
        return 0 if next_tier is None else TIER_THRESHOLDS[next_tier] - self.lifetime_points

    @classmethod
    def of(cls, account: LoyaltyAccount) -> Standing:
        return cls(
            account.store_id,
            account.customer_id,
            account.points_balance,
            account.lifetime_points,
            account.updated_at,
        )


@dataclass(frozen=True)
class CustomerLoyalty:
    customer: Customer
    standing: Standing
    # Newest first.
    recent_movements: list[LoyaltyMovement] = field(default_factory=list)


@dataclass(frozen=True)
class Movement:
    """A recorded movement and the account right after the call."""

    movement: LoyaltyMovement
    standing: Standing


class LoyaltyService:
    def __init__(self, database: TenantDatabase) -> None:
        self._db = database

    async def get_customer_loyalty(
        self, store_id: int, customer_id: int, *, history_limit: int = 0
    ) -> CustomerLoyalty:
        check_customer_id(customer_id)
        if history_limit < 0:
            raise InvalidArgument.of("history_limit", "must not be negative")
        limit = min(history_limit or DEFAULT_HISTORY, MAX_HISTORY)
        async with self._db.reading(store_id) as uow:
            session = uow.session
            customer = await load_customer(session, store_id, customer_id)
            standing = await load_standing(session, store_id, customer_id)
            recent = await session.scalars(
                select(LoyaltyMovement)
                .where(
                    LoyaltyMovement.store_id == store_id,
                    LoyaltyMovement.customer_id == customer_id,
                )
                .order_by(LoyaltyMovement.movement_id.desc())
                .limit(limit)
            )
            return CustomerLoyalty(customer, standing, list(recent))

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
        check_store_id(store_id)
        reason = _validated(customer_id, points, reason)
        delta = -points if operation == REDEEM_POINTS else points
        request = {"customer_id": customer_id, "points": delta, "reason": reason}
        key = RequestKey.parse(operation, request_id, request)
        return await create_once(
            self._db,
            store_id,
            key,
            create=lambda: self._record(store_id, customer_id, delta, reason, key),
            load=load_movement,
        )

    async def _record(
        self, store_id: int, customer_id: int, delta: int, reason: str, key: RequestKey | None
    ) -> Movement:
        async with self._db.writing(store_id) as uow:
            session = uow.session
            await _active_customer(uow.statements, store_id, customer_id)
            standing = await _apply(session, store_id, customer_id, delta)
            # Late, so the store's counter row stays locked only briefly. Every
            # movement locks its account before the counter: no lock cycle.
            movement = LoyaltyMovement(
                store_id=store_id,
                movement_id=await next_store_number(uow.statements, store_id, MOVEMENT_COUNTER),
                customer_id=customer_id,
                points=delta,
                balance_after=standing.points_balance,
                reason=reason,
                created_at=standing.updated_at,
            )
            session.add(movement)
            if key:
                await remember(uow.statements, store_id, key, movement.movement_id)
            await session.flush()
            await uow.commit()
        return Movement(movement, standing)


class LoyaltyMetricsProvider:
    """The loyalty module's CustomerMetricsProvider (services.core.customer_metrics):
    GetCustomerMetrics shows a customer's points without customers knowing loyalty."""

    source = "loyalty"

    def __init__(self, database: TenantDatabase) -> None:
        self._db = database

    async def customer_metrics(self, store_id: int, customer_id: int) -> list[CustomerMetric]:
        check_customer_id(customer_id)
        async with self._db.reading(store_id) as uow:
            await load_customer(uow.session, store_id, customer_id)  # NOT_FOUND if none
            standing = await load_standing(uow.session, store_id, customer_id)
        return [
            CustomerMetric("points_balance", "Loyalty points", standing.points_balance),
            CustomerMetric("lifetime_points", "Lifetime loyalty points", standing.lifetime_points),
            CustomerMetric("tier", "Loyalty tier (1 bronze to 4 platinum)", int(standing.tier)),
        ]


async def load_standing(session: AsyncSession, store_id: int, customer_id: int) -> Standing:
    account = await session.get(LoyaltyAccount, (store_id, customer_id))
    return Standing(store_id, customer_id) if account is None else Standing.of(account)


async def load_movement(session: AsyncSession, store_id: int, movement_id: int) -> Movement:
    """A movement recorded before (a retried request), with the account as it is now."""
    movement = await session.get(LoyaltyMovement, (store_id, movement_id))
    if movement is None:  # the idempotency key outlived its movement: a bug
        raise LookupError(f"loyalty movement {movement_id} of store {store_id} is missing")
    return Movement(movement, await load_standing(session, store_id, movement.customer_id))


async def _active_customer(statements: Transaction, store_id: int, customer_id: int) -> None:
    customer = await share_locked_customer(statements, store_id, customer_id)
    if not customer.is_active:
        raise FailedPrecondition(
            f"customer {customer_id} is inactive: its points cannot move",
            reason="CUSTOMER_INACTIVE",
            metadata={"customer_id": customer_id},
        )


async def _apply(session: AsyncSession, store_id: int, customer_id: int, delta: int) -> Standing:
    """Moves the balance by `delta` in one conditional UPDATE, which also locks the
    account until the transaction ends: concurrent movements of one customer queue
    there, and none can take the balance below zero."""
    await session.execute(
        upsert_insert(session.get_bind().dialect.name, LoyaltyAccount)
        .values(store_id=store_id, customer_id=customer_id, points_balance=0, lifetime_points=0)
        .on_conflict_do_nothing(index_elements=["store_id", "customer_id"])
    )
    now = utc_now()
    moved = (
        await session.execute(
            update(LoyaltyAccount)
            .where(
                LoyaltyAccount.store_id == store_id,
                LoyaltyAccount.customer_id == customer_id,
                LoyaltyAccount.points_balance + delta >= 0,
            )
            .values(
                points_balance=LoyaltyAccount.points_balance + delta,
                lifetime_points=LoyaltyAccount.lifetime_points + max(delta, 0),
                updated_at=now,
            )
            .returning(LoyaltyAccount.points_balance, LoyaltyAccount.lifetime_points)
            .execution_options(synchronize_session=False)
        )
    ).one_or_none()
    if moved is None:
        balance = (await load_standing(session, store_id, customer_id)).points_balance
        raise FailedPrecondition(
            f"the balance is {balance} points: {-delta} cannot be redeemed",
            reason="INSUFFICIENT_POINTS",
            metadata={"points_balance": balance, "points_requested": -delta},
        )
    return Standing(store_id, customer_id, moved.points_balance, moved.lifetime_points, now)


def _validated(customer_id: int, points: int, reason: str) -> str:
    """The reason, trimmed; INVALID_ARGUMENT naming every problem of the request."""
    problems = Violations()
    if customer_id <= 0:
        problems.add("customer_id", "must be a positive customer id")
    if not 1 <= points <= MAX_POINTS:
        problems.add("points", f"must be from 1 to {MAX_POINTS:,}")
    reason = reason.strip()
    if not reason:
        problems.add("reason", "is required")
    elif len(reason) > REASON_MAX:
        problems.add("reason", f"must be at most {REASON_MAX} characters")
    problems.raise_if_any()
    return reason
