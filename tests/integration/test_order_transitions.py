"""The orders service layer's status changes on a real database, without gRPC: a
change and its request_id's key are written in one transaction, or neither is."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import func, select

from services.core.db.idempotency import IdempotencyKey
from services.core.domain.errors import Aborted, FailedPrecondition
from services.core.domain.pagination import PageTokenCodec
from services.orders import service as order_service_module
from services.orders.models import OrderRevision, OrderStatus
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
