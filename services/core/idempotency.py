"""Idempotent creates (AIP-155): a create that carries a `request_id` is remembered
with the id of what it created, in the same transaction. A retry with the same
request_id gets the first result back instead of a duplicate or an error.

The key is (store_id, operation, request_id). A fingerprint of the request guards
against a request_id reused for a different request (INVALID_ARGUMENT). Secrets are
never part of the fingerprint: a fast hash of a password would weaken it."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar, cast

from sqlalchemy import (
    BigInteger,
    ForeignKey,
    Index,
    String,
    Table,
    delete,
    select,
    tuple_,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from services.core.database import Base, UtcDateTime, utc_now
from services.core.errors import InvalidArgument
from services.core.sql import Transaction, insert_row
from services.core.tenancy import TenantDatabase

T = TypeVar("T")


class IdempotencyKey(Base):
    __tablename__ = "idempotency_keys"

    store_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("stores.id", ondelete="CASCADE"), primary_key=True
    )
    operation: Mapped[str] = mapped_column(String(100), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    resource_id: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now)

    # Expired keys are found by age across every store (forget_expired).
    __table_args__ = (Index("ix_idempotency_keys_created_at", "created_at"),)


@dataclass(frozen=True)
class RequestKey:
    operation: str
    request_id: str
    fingerprint: str

    @classmethod
    def parse(
        cls, operation: str, request_id: str, request: Mapping[str, Any]
    ) -> RequestKey | None:
        """The key of a create request; None when it carries no request_id."""
        if not request_id:
            return None
        try:
            canonical = str(uuid.UUID(request_id))
        except ValueError:
            raise InvalidArgument.of(
                "request_id", "must be a UUID such as 123e4567-e89b-42d3-a456-426614174000"
            ) from None
        body = json.dumps(request, sort_keys=True, separators=(",", ":"), default=str)
        return cls(operation, canonical, hashlib.sha256(body.encode()).hexdigest())


async def previous_resource_id(session: AsyncSession, store_id: int, key: RequestKey) -> int | None:
    """The id created by an earlier request with this key, if there was one."""
    previous = await session.scalar(
        select(IdempotencyKey).where(
            IdempotencyKey.store_id == store_id,
            IdempotencyKey.operation == key.operation,
            IdempotencyKey.request_id == key.request_id,
        )
    )
    if previous is None:
        return None
    if previous.fingerprint != key.fingerprint:
        raise InvalidArgument.of("request_id", "was already used for a different request")
    return previous.resource_id


_REMEMBER = insert_row(cast(Table, IdempotencyKey.__table__))


async def remember(
    statements: Transaction, store_id: int, key: RequestKey, resource_id: int
) -> None:
    """Records the key in the caller's transaction (a unit of work's `statements` for
    its session's), so it commits with the resource."""
    await statements.execute(
        _REMEMBER,
        {
            "store_id": store_id,
            "operation": key.operation,
            "request_id": key.request_id,
            "fingerprint": key.fingerprint,
            "resource_id": resource_id,
            "created_at": utc_now(),
        },
    )


async def create_once(
    database: TenantDatabase,
    store_id: int,
    key: RequestKey | None,
    *,
    create: Callable[[], Awaitable[T]],
    load: Callable[[AsyncSession, int, int], Awaitable[T]],
    lost_race: tuple[type[Exception], ...] = (IntegrityError,),
) -> T:
    """Runs `create` (which must `remember` the key in its transaction), unless a
    request with the same key did already: then returns what that one created, read
    with `load(session, store_id, resource_id)`.

    When `create` fails with one of `lost_race` because a concurrent request with the
    same key committed first (the key's primary key, or the unique value the other
    request took), the caller gets that request's result too."""
    if key is None:
        return await create()
    if (previous := await _created_before(database, store_id, key, load)) is not None:
        return previous
    try:
        return await create()
    except lost_race:
        if (previous := await _created_before(database, store_id, key, load)) is not None:
            return previous
        raise


async def _created_before(
    database: TenantDatabase,
    store_id: int,
    key: RequestKey,
    load: Callable[[AsyncSession, int, int], Awaitable[T]],
) -> T | None:
    async with database.reading(store_id) as uow:
        resource_id = await previous_resource_id(uow.session, store_id, key)
        return None if resource_id is None else await load(uow.session, store_id, resource_id)


async def forget_expired(session: AsyncSession, before: datetime, *, batch: int = 1000) -> int:
    """Deletes up to `batch` keys created before `before`, in the caller's transaction;
    returns how many. Small batches keep each transaction, and its locks, short."""
    key = (IdempotencyKey.store_id, IdempotencyKey.operation, IdempotencyKey.request_id)
    expired = select(*key).where(IdempotencyKey.created_at < before).limit(batch)
    result = await session.execute(delete(IdempotencyKey).where(tuple_(*key).in_(expired)))
    return int(result.rowcount)  # type: ignore[attr-defined]
