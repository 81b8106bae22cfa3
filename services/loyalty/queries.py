"""Every statement of the loyalty module, in one place: fixed Core statements that
take the unit of work and return snapshots; the unit of work binds `store_id` into
every one."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import cast

from sqlalchemy import Table, bindparam, select, update

from services.core.db.statements import Statement, in_store, insert_row, insert_unless_present
from services.core.db.unit_of_work import UnitOfWork
from services.loyalty.models import (
    MOVEMENT_COLUMNS,
    LoyaltyAccount,
    LoyaltyMovement,
    MovementSnapshot,
)
from services.loyalty.rules import Standing

_ACCOUNT_KEY = in_store(LoyaltyAccount, "customer_id")
_STANDING_COLUMNS = (
    LoyaltyAccount.points_balance,
    LoyaltyAccount.lifetime_points,
    LoyaltyAccount.updated_at,
)
_GET_STANDING = Statement(select(*_STANDING_COLUMNS).where(*_ACCOUNT_KEY))
_OPEN_ACCOUNT = insert_unless_present(
    LoyaltyAccount,
    ("store_id", "customer_id"),
    fixed={"points_balance": 0, "lifetime_points": 0},
)
# Earned points count toward the lifetime total; redeemed ones do not lower it.
_MOVE_BALANCE = Statement(
    update(LoyaltyAccount)
    .where(*_ACCOUNT_KEY, LoyaltyAccount.points_balance + bindparam("delta") >= 0)
    .values(
        points_balance=LoyaltyAccount.points_balance + bindparam("delta"),
        lifetime_points=LoyaltyAccount.lifetime_points + bindparam("earned"),
        updated_at=bindparam("updated_at"),
    )
    .returning(*_STANDING_COLUMNS)
)
_INSERT_MOVEMENT = insert_row(cast(Table, LoyaltyMovement.__table__))
_MOVEMENTS = select(*MOVEMENT_COLUMNS).where(*in_store(LoyaltyMovement))
_GET_MOVEMENT = Statement(_MOVEMENTS.where(LoyaltyMovement.movement_id == bindparam("movement_id")))
# Newest first: one range scan of ix_loyalty_movements_customer.
_RECENT_MOVEMENTS = Statement(
    _MOVEMENTS.where(LoyaltyMovement.customer_id == bindparam("customer_id"))
    .order_by(LoyaltyMovement.movement_id.desc())
    .limit(bindparam("limit"))
)


# Oldest first: one range scan of ix_loyalty_movements_customer.
_MOVEMENTS_AFTER = Statement(
    _MOVEMENTS.where(
        LoyaltyMovement.customer_id == bindparam("customer_id"),
        LoyaltyMovement.movement_id > bindparam("after_id"),
    )
    .order_by(LoyaltyMovement.movement_id)
    .limit(bindparam("limit"))
)


async def get_account(uow: UnitOfWork, customer_id: int) -> Standing | None:
    """The customer's account; None when they never had a movement."""
    row = await uow.fetch_one(_GET_STANDING, {"customer_id": customer_id})
    return None if row is None else Standing(uow.store_id, customer_id, *row.values())


async def get_standing(uow: UnitOfWork, customer_id: int) -> Standing:
    """The customer's account; zeros when they never had a movement."""
    row = await uow.fetch_one(_GET_STANDING, {"customer_id": customer_id})
    if row is None:
        return Standing(uow.store_id, customer_id)
    return Standing(uow.store_id, customer_id, *row.values())


async def move_balance(
    uow: UnitOfWork, customer_id: int, delta: int, now: datetime
) -> Standing | None:
    """Moves the balance by `delta` in one conditional UPDATE, which also locks the
    account until the transaction ends: concurrent movements of one customer queue
    there. None, and nothing changed, when the balance would fall below zero."""
    account = {"customer_id": customer_id, "updated_at": now}
    await uow.execute(_OPEN_ACCOUNT[uow.dialect], account)
    moved = await uow.fetch_one(_MOVE_BALANCE, account | {"delta": delta, "earned": max(delta, 0)})
    return None if moved is None else Standing(uow.store_id, customer_id, *moved.values())


async def insert_movement(uow: UnitOfWork, movement: MovementSnapshot) -> None:
    await uow.execute(_INSERT_MOVEMENT, asdict(movement))


async def get_movement(uow: UnitOfWork, movement_id: int) -> MovementSnapshot | None:
    row = await uow.fetch_one(_GET_MOVEMENT, {"movement_id": movement_id})
    return None if row is None else MovementSnapshot.of(row)


async def recent_movements(uow: UnitOfWork, customer_id: int, limit: int) -> list[MovementSnapshot]:
    """The customer's last `limit` movements, newest first."""
    rows = await uow.fetch(_RECENT_MOVEMENTS, {"customer_id": customer_id, "limit": limit})
    return [MovementSnapshot.of(row) for row in rows]


# -- erasure (EraseCustomer, through the loyalty module's customer eraser) -----------------

_OF_CUSTOMER = in_store(LoyaltyMovement, "customer_id")
_CUSTOMER_MOVEMENT_IDS = Statement(
    select(LoyaltyMovement.movement_id).where(*_OF_CUSTOMER).order_by(LoyaltyMovement.movement_id)
)
# A reason is free text a caller wrote ("birthday gift for Ann"): the one personal
# copy a movement may hold. The ledger's amounts and balances stay.
_ERASE_REASONS = Statement(update(LoyaltyMovement).where(*_OF_CUSTOMER).values(reason=""))


async def erase_customer_reasons(uow: UnitOfWork, customer_id: int) -> list[int]:
    """Empties the reasons of the customer's movements; their ids, ascending."""
    params = {"customer_id": customer_id}
    rows = await uow.fetch(_CUSTOMER_MOVEMENT_IDS, params)
    if rows:
        await uow.execute(_ERASE_REASONS, params)
    return [int(row["movement_id"]) for row in rows]


async def movements_after(
    uow: UnitOfWork, customer_id: int, after_id: int, limit: int
) -> list[MovementSnapshot]:
    """Up to `limit` of the customer's movements with ids above `after_id`, oldest
    first."""
    params = {"customer_id": customer_id, "after_id": after_id, "limit": limit}
    return [MovementSnapshot.of(row) for row in await uow.fetch(_MOVEMENTS_AFTER, params)]
