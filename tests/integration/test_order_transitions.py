"""The orders service layer's status changes on a real database, without gRPC: a
change and its request_id's key are written in one transaction, or neither is."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from services.core.db.engine import utc_now
from services.core.db.idempotency import IdempotencyKey
from services.core.domain.errors import Aborted, FailedPrecondition
from services.core.domain.pagination import PageTokenCodec
from services.orders import service as order_service_module
from services.orders.models import OrderRevision, OrderStatus
from services.orders.queries import purge_expired_revisions
from services.orders.rules import NewLineItem, NewOrder, StatusChange
from services.orders.service import OrderService


@pytest.fixture
def order_service(database) -> OrderService:
    return OrderService(database, PageTokenCodec("secret"))


async def count(sessions, model, store_id: int) -> int:
    async with sessions() as session:
        return await session.scalar(
            select(func.count()).select_from(model).where(model.store_id == store_id)
        )


async def placed(order_service: OrderService, store_id: int) -> int:
    new = NewOrder([NewLineItem("SKU", "Thing", 1, 100)], "EUR")
    return (await order_service.create_order(store_id, new)).order_id


async def test_concurrent_retries_change_the_order_once(order_service, store_id, sessions):
    order_id = await placed(order_service, store_id)
    request_id = str(uuid.uuid4())
    pay = StatusChange(order_id, OrderStatus.PAID, etag="r1")
    answers = await asyncio.gather(
        *(order_service.change_status(store_id, pay, request_id=request_id) for _ in range(8))
    )
    assert {(answer.status, answer.revision) for answer in answers} == {("paid", 2)}
    assert len(set(answers)) == 1
    assert await count(sessions, OrderRevision, store_id) == 1
    assert await count(sessions, IdempotencyKey, store_id) == 1


async def test_a_refused_change_leaves_no_key(order_service, store_id, sessions):
    order_id = await placed(order_service, store_id)
    with pytest.raises(Aborted):
        await order_service.change_status(
            store_id,
            StatusChange(order_id, OrderStatus.PAID, etag="r7"),
            request_id=str(uuid.uuid4()),
        )
    with pytest.raises(FailedPrecondition):
        await order_service.change_status(
            store_id, StatusChange(order_id, OrderStatus.SHIPPED), request_id=str(uuid.uuid4())
        )
    assert await count(sessions, IdempotencyKey, store_id) == 0
    assert await count(sessions, OrderRevision, store_id) == 0


async def test_the_change_and_its_key_commit_together(
    order_service, store_id, sessions, monkeypatch
):
    """A failure between the change and the commit undoes the change too: the retry
    then makes it, once."""
    order_id = await placed(order_service, store_id)
    request_id = str(uuid.uuid4())
    pay = StatusChange(order_id, OrderStatus.PAID)

    async def lost(*_: object) -> None:
        raise ConnectionResetError("lost before the commit")

    monkeypatch.setattr(order_service_module, "remember", lost)
    with pytest.raises(ConnectionResetError):
        await order_service.change_status(store_id, pay, request_id=request_id)
    monkeypatch.undo()
    assert (await order_service.get_order(store_id, order_id)).status == "pending"
    assert await count(sessions, IdempotencyKey, store_id) == 0
    assert await count(sessions, OrderRevision, store_id) == 0

    paid = await order_service.change_status(store_id, pay, request_id=request_id)
    assert (paid.status, paid.revision) == ("paid", 2)
    assert await order_service.change_status(store_id, pay, request_id=request_id) == paid
    assert await count(sessions, IdempotencyKey, store_id) == 1


async def test_expired_revisions_are_purged_and_remembered_ones_kept(
    order_service, store_id, sessions, database
):
    """What a status change left of the order is kept while a request_id can name it
    (and a margin beyond), then purged, oldest first."""
    order_id = await placed(order_service, store_id)
    pay, ship, deliver = (
        StatusChange(order_id, status)
        for status in (OrderStatus.PAID, OrderStatus.SHIPPED, OrderStatus.DELIVERED)
    )
    ship_request = str(uuid.uuid4())
    await order_service.change_status(store_id, pay, request_id=str(uuid.uuid4()))
    shipped = await order_service.change_status(store_id, ship, request_id=ship_request)
    await order_service.change_status(store_id, deliver, request_id=str(uuid.uuid4()))

    now = utc_now()
    cutoff = now - timedelta(hours=1)  # the request_id retention's cutoff
    ages = {2: now - timedelta(days=3650), 3: cutoff - timedelta(hours=1)}
    async with sessions() as session, session.begin():
        for revision, updated_at in ages.items():
            await session.execute(
                update(OrderRevision)
                .where(
                    OrderRevision.store_id == store_id,
                    OrderRevision.order_id == order_id,
                    OrderRevision.revision == revision,
                )
                .values(updated_at=updated_at)
            )

    rounds = []
    while not rounds or rounds[-1] == 1:
        async with database.maintenance() as statements:
            rounds.append(await purge_expired_revisions(statements, cutoff, 1))
            await statements.commit()
    # No other test's revision is that old: only the paid one goes; the shipped one,
    # just past the cutoff, is within the margin and still answers its retry.
    assert rounds == [1, 0]
    async with sessions() as session:
        left = await session.scalars(
            select(OrderRevision.revision).where(
                OrderRevision.store_id == store_id, OrderRevision.order_id == order_id
            )
        )
        assert sorted(left) == [3, 4]
    retried = await order_service.change_status(store_id, ship, request_id=ship_request)
    assert (retried.status, retried.revision) == ("shipped", shipped.revision)
