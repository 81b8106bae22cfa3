"""The loyalty service layer on a real database, without gRPC; and the database's own
guard on the ledger."""

from __future__ import annotations

import pytest
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError

from services.core.domain.errors import FailedPrecondition, NotFound
from services.core.domain.pagination import PageTokenCodec
from services.core.domain.passwords import PasswordHasher
from services.customers.service import CustomerService, NewCustomer
from services.loyalty.models import LoyaltyAccount
from services.loyalty.rules import Standing, Tier
from services.loyalty.service import LoyaltyMetricsProvider, LoyaltyService
from tests.orm import UnitOfWork


@pytest.fixture
async def customer_id(database, store_id) -> int:
    passwords = PasswordHasher(rounds=4, max_workers=1)
    try:
        service = CustomerService(database, passwords, PageTokenCodec("secret"))
        return (await service.create_customer(store_id, NewCustomer("lou@example.com"))).customer_id
    finally:
        passwords.close()


async def test_loyalty_without_grpc(database, store_id, customer_id):
    service = LoyaltyService(database)
    added = await service.add_points(store_id, customer_id, 5200, "launch")
    assert added.standing == Standing(store_id, customer_id, 5200, 5200, added.movement.created_at)
    assert added.standing.tier is Tier.GOLD
    redeemed = await service.redeem_points(store_id, customer_id, 5200, "all of it")
    assert (redeemed.movement.points, redeemed.movement.balance_after) == (-5200, 0)
    with pytest.raises(FailedPrecondition):
        await service.redeem_points(store_id, customer_id, 1, "nothing left")
    loyalty = await service.get_customer_loyalty(store_id, customer_id, history_limit=1)
    assert [m.movement_id for m in loyalty.recent_movements] == [redeemed.movement.movement_id]
    assert loyalty.standing.tier is Tier.GOLD  # redeeming never lowers a tier

    metrics = await LoyaltyMetricsProvider(database).customer_metrics(store_id, customer_id)
    assert [(m.name, m.value) for m in metrics] == [
        ("points_balance", 0),
        ("lifetime_points", 5200),
        ("tier", Tier.GOLD),
    ]
    with pytest.raises(NotFound):
        await LoyaltyMetricsProvider(database).customer_metrics(store_id, customer_id + 1000)


async def test_the_database_refuses_a_negative_balance(database, sessions, store_id, customer_id):
    """Even a bug that skipped the service layer cannot take a balance below zero."""
    await LoyaltyService(database).add_points(store_id, customer_id, 10, "seed")
    async with UnitOfWork(sessions) as uow:
        negative = (
            update(LoyaltyAccount)
            .where(LoyaltyAccount.store_id == store_id)
            .values(points_balance=-1)
        )
        with pytest.raises(IntegrityError):
            await uow.session.execute(negative)
