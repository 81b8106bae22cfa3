"""Stores: the tenants. Owned by the core because every module is scoped to one.

Also the per-store counters that give human-readable, gap-free numbers (customer
numbers, order numbers) without a race, on PostgreSQL and SQLite alike."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Integer, String, bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from services.core.database import Base, UtcDateTime, upsert_insert, utc_now
from services.core.errors import FailedPrecondition, InvalidArgument, NotFound
from services.core.sql import Statement, Transaction

# SQLite only auto-increments a column declared exactly INTEGER PRIMARY KEY.
StoreIdType = BigInteger().with_variant(Integer(), "sqlite")


class Store(Base):
    """A tenant. Every store-owned row of every module references one."""

    __tablename__ = "stores"

    id: Mapped[int] = mapped_column(StoreIdType, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(255))
    is_active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now)


class StoreCounter(Base):
    """The last number handed out for one kind of record in one store."""

    __tablename__ = "store_counters"

    store_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("stores.id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(String(50), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger)


def check_store_id(store_id: int) -> None:
    if store_id <= 0:
        raise InvalidArgument.of("store_id", "must be a positive store id")


async def store_is_active(session: AsyncSession, store_id: int) -> bool:
    """Whether the store is active; NOT_FOUND when there is no such store."""
    is_active = await session.scalar(select(Store.is_active).where(Store.id == store_id))
    if is_active is None:
        raise NotFound("store", str(store_id))
    return is_active


def store_inactive(store_id: int) -> FailedPrecondition:
    return FailedPrecondition(
        f"store {store_id} is inactive", reason="STORE_INACTIVE", metadata={"store_id": store_id}
    )


def _next_number(dialect: str) -> Statement:
    return Statement(
        upsert_insert(dialect, StoreCounter)
        .values(store_id=bindparam("store_id"), name=bindparam("name"), value=1)
        .on_conflict_do_update(
            index_elements=[StoreCounter.store_id, StoreCounter.name],
            set_={"value": StoreCounter.value + 1},
        )
        .returning(StoreCounter.value)
    )


# Each database spells an upsert its own way.
_NEXT_NUMBER = {dialect: _next_number(dialect) for dialect in ("postgresql", "sqlite")}

STORE_IS_ACTIVE = Statement(select(Store.is_active).where(Store.id == bindparam("store_id")))


async def next_store_number(statements: Transaction, store_id: int, counter: str) -> int:
    """Allocates the next number of `counter` in the store, inside the caller's
    transaction (a unit of work's `statements` for its session's). The counter row
    stays locked until that transaction ends, so concurrent callers (in any process)
    get distinct numbers, and a rolled-back transaction gives its number back. Call
    it late to hold the lock briefly."""
    params = {"store_id": store_id, "name": counter}
    return int(await statements.scalar(_NEXT_NUMBER[statements.dialect], params))


async def create_store(session: AsyncSession, name: str) -> Store:
    store = Store(name=name, is_active=True)
    session.add(store)
    await session.flush()
    return store


async def list_stores(session: AsyncSession) -> list[Store]:
    return list(await session.scalars(select(Store).order_by(Store.id)))


async def set_store_active(session: AsyncSession, store_id: int, active: bool) -> Store:
    store = await session.get(Store, store_id)
    if store is None:
        raise NotFound("store", str(store_id))
    store.is_active = active
    return store
