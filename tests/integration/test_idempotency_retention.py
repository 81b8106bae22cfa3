"""Expired idempotency keys are deleted in small batches, the fresh ones kept."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import func, select

from services.core.db.engine import utc_now
from services.core.db.idempotency import IdempotencyKey, forget_expired
from tests.orm import UnitOfWork

OLD = 24 * 365 * 10  # hours: ten years


async def test_forget_expired_deletes_old_keys_in_batches(
    sessions, database, store_id, other_store_id
):
    now = utc_now()
    async with UnitOfWork(sessions) as uow:
        for store, age_hours in [(store_id, OLD)] * 5 + [
            (other_store_id, OLD),
            (store_id, OLD - 2),
        ]:
            uow.session.add(
                IdempotencyKey(
                    store_id=store,
                    operation="test.Create",
                    request_id=str(uuid.uuid4()),
                    fingerprint="f",
                    resource_id=1,
                    created_at=now - timedelta(hours=age_hours),
                )
            )
        await uow.commit()

    cutoff = now - timedelta(hours=OLD - 1)
    rounds = []
    while True:
        async with database.maintenance() as statements:
            rounds.append(await forget_expired(statements, cutoff, batch=4))
            await statements.commit()
        if rounds[-1] < 4:
            break
    # No other test's key is this old: exactly these six go, four at a time at most.
    assert sum(rounds) == 6
    assert rounds[0] == 4

    async with UnitOfWork(sessions) as uow:
        left = await uow.session.scalar(
            select(func.count())
            .select_from(IdempotencyKey)
            .where(IdempotencyKey.store_id.in_([store_id, other_store_id]))
        )
    assert left == 1
