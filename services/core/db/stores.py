"""Stores: the tenants. Owned by the core because every module is scoped to one.

Also the table of per-store counters (services.core.db.counters hands out their
numbers)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Integer, String, bindparam, insert, select, update
from sqlalchemy.orm import Mapped, mapped_column

from services.core.db.engine import Base, UtcDateTime, utc_now
from services.core.db.statements import Statement, Transaction
from services.core.domain.errors import FailedPrecondition, InvalidArgument, NotFound

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


def store_inactive(store_id: int) -> FailedPrecondition:
    return FailedPrecondition(
        f"store {store_id} is inactive", reason="STORE_INACTIVE", metadata={"store_id": store_id}
    )


STORE_IS_ACTIVE = Statement(select(Store.is_active).where(Store.id == bindparam("store_id")))


# -- the operator's commands (commerce stores ...) ----------------------------------------


@dataclass(frozen=True)
class StoreSnapshot:
    id: int
    name: str
    is_active: bool


_STORE_COLUMNS = (Store.id, Store.name, Store.is_active)
_CREATE_STORE = Statement(
    insert(Store)
    .values(name=bindparam("name"), is_active=True, created_at=bindparam("created_at"))
    .returning(*_STORE_COLUMNS)
)
_LIST_STORES = Statement(select(*_STORE_COLUMNS).order_by(Store.id))
_SET_STORE_ACTIVE = Statement(
    update(Store)
    .where(Store.id == bindparam("store_id"))
    .values(is_active=bindparam("is_active"))
    .returning(*_STORE_COLUMNS)
)


async def create_store(statements: Transaction, name: str) -> StoreSnapshot:
    row = await statements.fetch_one(_CREATE_STORE, {"name": name, "created_at": utc_now()})
    assert row is not None  # INSERT ... RETURNING returns its row
    return StoreSnapshot(*row.values())


async def list_stores(statements: Transaction) -> list[StoreSnapshot]:
    return [StoreSnapshot(*row.values()) for row in await statements.fetch(_LIST_STORES, {})]


async def set_store_active(statements: Transaction, store_id: int, active: bool) -> StoreSnapshot:
    params = {"store_id": store_id, "is_active": active}
    row = await statements.fetch_one(_SET_STORE_ACTIVE, params)
    if row is None:
        raise NotFound("store", str(store_id))
    return StoreSnapshot(*row.values())
