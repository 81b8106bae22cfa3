"""Idempotent creates (AIP-155): a create that carries a `request_id` claims it in its
own transaction, and remembers there what it created. A retry with the same
request_id gets the first result back instead of a duplicate or an error.

The key is (store_id, operation, request_id). A fingerprint of the request guards
against a request_id reused for a different request (INVALID_ARGUMENT). Secrets are
never part of the fingerprint: a fast hash of a password would weaken it."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    ForeignKey,
    Index,
    String,
    bindparam,
    exists,
    select,
)
from sqlalchemy import update as sql_update
from sqlalchemy.orm import Mapped, mapped_column

from services.core.db.engine import Base, UtcDateTime, utc_now
from services.core.db.retention import delete_oldest
from services.core.db.statements import (
    DIALECTS,
    Statement,
    Transaction,
    in_store,
    insert_unless_present,
    one_of,
)
from services.core.db.unit_of_work import UnitOfWork
from services.core.domain.errors import InvalidArgument


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

    __table_args__ = (
        # Expired keys are found by age across every store (forget_expired).
        Index("ix_idempotency_keys_created_at", "created_at"),
        # The keys of what a request created, whose fingerprints an erasure erases
        # (erase_fingerprints).
        Index("ix_idempotency_keys_resource", "store_id", "operation", "resource_id"),
    )


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


_KEY = ("store_id", "operation", "request_id")
_KEY_COLUMNS = [IdempotencyKey.__table__.c[name] for name in _KEY]
_THIS_KEY = in_store(IdempotencyKey, "operation", "request_id")
# Until `remember` runs, a claimed key points at no resource.
_CLAIM = insert_unless_present(
    IdempotencyKey,
    _KEY,
    fixed={"resource_id": 0},
    returning=[IdempotencyKey.resource_id],
)
_EARLIER = Statement(
    select(IdempotencyKey.fingerprint, IdempotencyKey.resource_id).where(*_THIS_KEY)
)
_REMEMBER = Statement(
    sql_update(IdempotencyKey).where(*_THIS_KEY).values(resource_id=bindparam("resource_id"))
)


# What an erased request's fingerprint becomes: no SHA-256 digest (64 hex digits)
# equals it, so a retry of that request_id is told it was used for another request
# (INVALID_ARGUMENT) rather than answered with, or repeating, what it created.
ERASED_FINGERPRINT = "erased"
_ERASE_FINGERPRINTS = {
    dialect: Statement(
        sql_update(IdempotencyKey)
        .where(*in_store(IdempotencyKey, "operation"), one_of_ids)
        .values(fingerprint=ERASED_FINGERPRINT)
    )
    for dialect, one_of_ids in one_of(
        IdempotencyKey.__table__.c.resource_id, "resource_ids"
    ).items()
}


def key_params(key: RequestKey) -> dict[str, Any]:
    """The parameters that name the key in a statement (with the store's id)."""
    return {"operation": key.operation, "request_id": key.request_id}


def is_claimed() -> ColumnElement[bool]:
    """The condition that the key bound as `operation` and `request_id`, in the store
    bound as `store_id` (parameters: key_params), was claimed by a request that
    committed: a claim still in flight is not seen."""
    return exists().where(*_THIS_KEY)


async def claim(uow: UnitOfWork, key: RequestKey | None) -> int | None:
    """Claims the request's key in the unit of work's transaction. Returns the id of
    what an earlier request with this key created: the caller answers with that and
    creates nothing. None: the caller creates, and `remember`s the id before it
    commits (without a key, always None).

    A concurrent request with the same key waits here until the first one's
    transaction ends: then it gets that one's id, or, if it rolled back, the claim."""
    if key is None:
        return None
    params = key_params(key) | {"fingerprint": key.fingerprint, "created_at": utc_now()}
    if await uow.fetch(_CLAIM[uow.dialect], params):
        return None
    earlier = await uow.fetch_one(_EARLIER, key_params(key))
    assert earlier is not None  # the conflicting key is committed, or we would wait
    if earlier["fingerprint"] != key.fingerprint:
        raise InvalidArgument.of("request_id", "was already used for a different request")
    return int(earlier["resource_id"])


async def remember(uow: UnitOfWork, key: RequestKey | None, resource_id: int) -> None:
    """Records what the claimed key's request created, in the same transaction."""
    if key is not None:
        await uow.execute(_REMEMBER, key_params(key) | {"resource_id": resource_id})


async def erase_fingerprints(
    uow: UnitOfWork, operation: str, resource_ids: Sequence[int], *, batch: int = 500
) -> None:
    """Replaces the fingerprints of the store's `operation` keys that created
    `resource_ids`: a fingerprint hashes the request, personal data included (an
    email, an address), so an erasure cannot leave it. The keys themselves stay
    until they expire, so their request_ids are never taken for a new request."""
    for start in range(0, len(resource_ids), batch):
        chunk = list(resource_ids[start : start + batch])
        params = {"operation": operation, "resource_ids": chunk}
        await uow.execute(_ERASE_FINGERPRINTS[uow.dialect], params)


def _forget(dialect: str) -> Statement:
    """Deletes the oldest expired keys, up to a batch, found by age through
    ix_idempotency_keys_created_at."""
    return delete_oldest(IdempotencyKey, IdempotencyKey.created_at, dialect)


_FORGET = {dialect: _forget(dialect) for dialect in DIALECTS}


async def forget_expired(statements: Transaction, before: datetime, *, batch: int = 1000) -> int:
    """Deletes up to `batch` keys created before `before`, in the caller's transaction;
    returns how many. Small batches keep each transaction, and its locks, short."""
    params = {"before": before, "batch": batch}
    return len(await statements.fetch(_FORGET[statements.dialect], params))
