"""CustomerLoyaltyService through the real server: balances, tiers, the ledger, bad
input, retries, concurrent movements of one customer, and store isolation."""

from __future__ import annotations

import asyncio
import random
import uuid

import grpc
import pytest
from commerce.customers.v1 import customer_pb2
from commerce.loyalty.v1 import customer_loyalty_service_pb2 as pb
from commerce.loyalty.v1 import loyalty_pb2
from sqlalchemy import func, select

from services.loyalty.models import LoyaltyAccount, LoyaltyMovement
from tests.e2e.helpers import create_customer
from tests.e2e.helpers import pb as customers_pb
from tests.errors import rpc_error
from tests.orm import UnitOfWork

Code = grpc.StatusCode
T = loyalty_pb2.LoyaltyTier


async def add(loyalty, store_id: int, customer_id: int, points: int, **fields: object):
    fields.setdefault("reason", "test")
    return await loyalty.AddLoyaltyPoints(
        pb.AddLoyaltyPointsRequest(
            store_id=store_id, customer_id=customer_id, points=points, **fields
        )
    )


async def redeem(loyalty, store_id: int, customer_id: int, points: int, **fields: object):
    fields.setdefault("reason", "test")
    return await loyalty.RedeemLoyaltyPoints(
        pb.RedeemLoyaltyPointsRequest(
            store_id=store_id, customer_id=customer_id, points=points, **fields
        )
    )


async def get(loyalty, store_id: int, customer_id: int, **fields: object):
    return await loyalty.GetCustomerLoyalty(
        pb.GetCustomerLoyaltyRequest(store_id=store_id, customer_id=customer_id, **fields)
    )


async def ledger(sessions, store_id: int, customer_id: int) -> tuple[int, int, list[int]]:
    """(stored balance, sum of the movements, balances after each movement in order)."""
    async with UnitOfWork(sessions) as uow:
        account = await uow.session.get(LoyaltyAccount, (store_id, customer_id))
        total = await uow.session.scalar(
            select(func.coalesce(func.sum(LoyaltyMovement.points), 0)).where(
                LoyaltyMovement.store_id == store_id, LoyaltyMovement.customer_id == customer_id
            )
        )
        movements = (
            await uow.session.scalars(
                select(LoyaltyMovement)
                .where(
                    LoyaltyMovement.store_id == store_id,
                    LoyaltyMovement.customer_id == customer_id,
                )
                .order_by(LoyaltyMovement.movement_id)
            )
        ).all()
        balances, running = [], 0
        for movement in movements:
            running += movement.points
            assert movement.balance_after == running, "each balance_after follows the ledger"
            balances.append(movement.balance_after)
    return (account.points_balance if account else 0), int(total or 0), balances


async def test_a_new_customer_has_an_empty_bronze_account(loyalty, customers, store_id):
    customer = await create_customer(customers, store_id)
    answer = await get(loyalty, store_id, customer.customer_id)
    assert answer.loyalty == loyalty_pb2.CustomerLoyalty(
        store_id=store_id,
        customer_id=customer.customer_id,
        tier=T.LOYALTY_TIER_BRONZE,
        next_tier=T.LOYALTY_TIER_SILVER,
        points_to_next_tier=1000,
    )
    assert list(answer.recent_movements) == []
    assert answer.customer == customer


async def test_points_move_through_the_ledger(loyalty, customers, sessions, store_id):
    cid = (await create_customer(customers, store_id)).customer_id
    added = await add(loyalty, store_id, cid, 1200, reason="  welcome  ")
    assert (added.movement.points, added.movement.balance_after) == (1200, 1200)
    assert added.movement.reason == "welcome"
    assert added.loyalty.points_balance == 1200
    redeemed = await redeem(loyalty, store_id, cid, 500, reason="voucher")
    assert (redeemed.movement.points, redeemed.movement.balance_after) == (-500, 700)
    assert redeemed.movement.movement_id > added.movement.movement_id
    assert (redeemed.loyalty.points_balance, redeemed.loyalty.lifetime_points) == (700, 1200)
    assert redeemed.loyalty.update_time == redeemed.movement.create_time

    answer = await get(loyalty, store_id, cid)
    assert list(answer.recent_movements) == [redeemed.movement, added.movement]
    assert answer.loyalty == redeemed.loyalty
    assert await ledger(sessions, store_id, cid) == (700, 700, [1200, 700])


@pytest.mark.parametrize(
    ("lifetime", "tier", "next_tier", "to_next"),
    [
        (999, T.LOYALTY_TIER_BRONZE, T.LOYALTY_TIER_SILVER, 1),
        (1000, T.LOYALTY_TIER_SILVER, T.LOYALTY_TIER_GOLD, 4000),
        (5000, T.LOYALTY_TIER_GOLD, T.LOYALTY_TIER_PLATINUM, 15000),
        (19_999, T.LOYALTY_TIER_GOLD, T.LOYALTY_TIER_PLATINUM, 1),
        (20_000, T.LOYALTY_TIER_PLATINUM, T.LOYALTY_TIER_UNSPECIFIED, 0),
    ],
)
async def test_tiers_follow_lifetime_points_and_redeeming_keeps_them(
    loyalty, customers, store_id, lifetime, tier, next_tier, to_next
):
    cid = (await create_customer(customers, store_id)).customer_id
    await add(loyalty, store_id, cid, lifetime)
    account = (await redeem(loyalty, store_id, cid, lifetime)).loyalty
    assert (account.points_balance, account.lifetime_points) == (0, lifetime)
    assert (account.tier, account.next_tier, account.points_to_next_tier) == (
        tier,
        next_tier,
        to_next,
    )


async def test_a_balance_never_goes_below_zero(loyalty, customers, sessions, store_id):
    cid = (await create_customer(customers, store_id)).customer_id
    await add(loyalty, store_id, cid, 300)
    failure = await rpc_error(redeem(loyalty, store_id, cid, 301), Code.FAILED_PRECONDITION)
    assert failure.error_info.reason == "INSUFFICIENT_POINTS"
    assert failure.error_info.domain == "commerce.loyalty.v1"
    assert dict(failure.error_info.metadata) == {
        "points_balance": "300",
        "points_requested": "301",
    }
    # A customer who never earned anything cannot redeem either.
    newcomer = (await create_customer(customers, store_id)).customer_id
    await rpc_error(redeem(loyalty, store_id, newcomer, 1), Code.FAILED_PRECONDITION)
    assert await ledger(sessions, store_id, cid) == (300, 300, [300])
    assert await ledger(sessions, store_id, newcomer) == (0, 0, [])


@pytest.mark.parametrize(
    ("fields", "violations"),
    [
        ({"points": 0}, {"points"}),
        ({"points": -5}, {"points"}),
        ({"points": 1_000_000_001}, {"points"}),
        ({"points": 2**63 - 1}, {"points"}),
        ({"reason": "   "}, {"reason"}),
        ({"reason": "x" * 201}, {"reason"}),
        ({"customer_id": 0, "points": 0, "reason": ""}, {"customer_id", "points", "reason"}),
        ({"customer_id": -1}, {"customer_id"}),
        ({"request_id": "not-a-uuid"}, {"request_id"}),
    ],
)
@pytest.mark.parametrize("operation", [add, redeem])
async def test_bad_movements_are_invalid_and_change_nothing(
    loyalty, customers, sessions, store_id, operation, fields, violations
):
    cid = (await create_customer(customers, store_id)).customer_id
    await add(loyalty, store_id, cid, 50)
    request = {"customer_id": cid, "points": 10, "reason": "test"} | fields
    customer_id = request.pop("customer_id")
    points = request.pop("points")
    failure = await rpc_error(
        operation(loyalty, store_id, customer_id, points, **request), Code.INVALID_ARGUMENT
    )
    assert failure.violated_fields == violations
    assert await ledger(sessions, store_id, cid) == (50, 50, [50])


async def test_unknown_and_inactive_customers(loyalty, customers, store_id):
    for call in (
        get(loyalty, store_id, 987_654),
        add(loyalty, store_id, 987_654, 10),
        redeem(loyalty, store_id, 987_654, 10),
    ):
        failure = await rpc_error(call, Code.NOT_FOUND)
        assert failure.error_info.reason == "CUSTOMER_NOT_FOUND"
    await rpc_error(get(loyalty, 987_654_321, 1), Code.NOT_FOUND)  # no such store

    cid = (await create_customer(customers, store_id)).customer_id
    await add(loyalty, store_id, cid, 10)
    await customers.SetCustomerStatus(
        customers_pb.SetCustomerStatusRequest(
            store_id=store_id, customer_id=cid, status=customer_pb2.CUSTOMER_STATUS_INACTIVE
        )
    )
    for call in (add(loyalty, store_id, cid, 10), redeem(loyalty, store_id, cid, 5)):
        failure = await rpc_error(call, Code.FAILED_PRECONDITION)
        assert failure.error_info.reason == "CUSTOMER_INACTIVE"
    assert (await get(loyalty, store_id, cid)).loyalty.points_balance == 10  # still readable


async def test_history_is_newest_first_and_limited(loyalty, customers, store_id):
    cid = (await create_customer(customers, store_id)).customer_id
    for points in range(1, 16):
        await add(loyalty, store_id, cid, points, reason=f"#{points}")
    default = await get(loyalty, store_id, cid)
    assert [m.points for m in default.recent_movements] == list(range(15, 5, -1))
    three = await get(loyalty, store_id, cid, history_limit=3)
    assert [m.reason for m in three.recent_movements] == ["#15", "#14", "#13"]
    everything = await get(loyalty, store_id, cid, history_limit=1000)  # lowered to 100
    assert len(everything.recent_movements) == 15
    await rpc_error(get(loyalty, store_id, cid, history_limit=-1), Code.INVALID_ARGUMENT)


async def test_a_retried_request_moves_points_once(loyalty, customers, sessions, store_id):
    cid = (await create_customer(customers, store_id)).customer_id
    request_id = str(uuid.uuid4())
    first = await add(loyalty, store_id, cid, 100, request_id=request_id)
    again = await add(loyalty, store_id, cid, 100, request_id=request_id)
    assert again.movement == first.movement
    redeem_id = str(uuid.uuid4())
    racing = await asyncio.gather(
        *(redeem(loyalty, store_id, cid, 30, request_id=redeem_id) for _ in range(5))
    )
    assert len({answer.movement.movement_id for answer in racing}) == 1
    assert await ledger(sessions, store_id, cid) == (70, 70, [100, 70])
    # The same request_id for a different movement is a caller's bug.
    failure = await rpc_error(
        add(loyalty, store_id, cid, 999, request_id=request_id), Code.INVALID_ARGUMENT
    )
    assert failure.violated_fields == {"request_id"}
    # Adding and redeeming are different operations: one id cannot collide across them.
    shared = str(uuid.uuid4())
    await add(loyalty, store_id, cid, 5, request_id=shared)
    await redeem(loyalty, store_id, cid, 5, request_id=shared)
    assert await ledger(sessions, store_id, cid) == (70, 70, [100, 70, 75, 70])


async def test_a_request_id_reused_for_another_customer_is_invalid(
    loyalty, customers, sessions, store_id
):
    """Same points, same reason, same request_id, another customer: not a retry."""
    ann = (await create_customer(customers, store_id)).customer_id
    bob = (await create_customer(customers, store_id)).customer_id
    request_id = str(uuid.uuid4())
    await add(loyalty, store_id, ann, 40, request_id=request_id)
    failure = await rpc_error(
        add(loyalty, store_id, bob, 40, request_id=request_id), Code.INVALID_ARGUMENT
    )
    assert failure.violated_fields == {"request_id"}
    redeem_id = str(uuid.uuid4())
    await redeem(loyalty, store_id, ann, 10, request_id=redeem_id)
    await add(loyalty, store_id, bob, 10)
    failure = await rpc_error(
        redeem(loyalty, store_id, bob, 10, request_id=redeem_id), Code.INVALID_ARGUMENT
    )
    assert failure.violated_fields == {"request_id"}
    assert await ledger(sessions, store_id, ann) == (30, 30, [40, 30])
    assert await ledger(sessions, store_id, bob) == (10, 10, [10])


async def test_concurrent_movements_of_one_customer_never_lose_or_double_one(
    loyalty, customers, sessions, store_id
):
    cid = (await create_customer(customers, store_id)).customer_id
    await add(loyalty, store_id, cid, 100)
    rng = random.Random(7)  # noqa: S311 (test data, not secrets)
    moves = [(rng.choice([add, redeem]), rng.randint(1, 60)) for _ in range(60)]

    async def attempt(operation, points: int) -> int | grpc.StatusCode:
        """The points the movement applied, or the code it was refused with."""
        try:
            return (await operation(loyalty, store_id, cid, points)).movement.points
        except grpc.aio.AioRpcError as error:
            return error.code()

    outcomes = await asyncio.gather(*(attempt(operation, points) for operation, points in moves))
    refusals = [outcome for outcome in outcomes if isinstance(outcome, grpc.StatusCode)]
    assert set(refusals) <= {Code.FAILED_PRECONDITION}  # only for lack of points
    applied = [outcome for outcome in outcomes if isinstance(outcome, int)]
    balance, total, balances = await ledger(sessions, store_id, cid)
    assert balance == total == 100 + sum(applied)
    assert len(balances) == 1 + len(applied)
    assert min(balances) >= 0
    assert any(points < 0 for points in applied)  # redemptions raced with additions
    assert (await get(loyalty, store_id, cid)).loyalty.points_balance == balance


async def test_store_b_never_sees_nor_moves_store_a_points(
    loyalty, customers, sessions, store_id, other_store_id
):
    a, b = store_id, other_store_id
    cid = (await create_customer(customers, a)).customer_id
    await add(loyalty, a, cid, 500)
    for call in (
        get(loyalty, b, cid),
        add(loyalty, b, cid, 10),
        redeem(loyalty, b, cid, 10),
        customers.GetCustomerMetrics(
            customers_pb.GetCustomerMetricsRequest(store_id=b, customer_id=cid)
        ),
    ):
        await rpc_error(call, Code.NOT_FOUND)
    assert await ledger(sessions, a, cid) == (500, 500, [500])
    assert await ledger(sessions, b, cid) == (0, 0, [])


async def test_customer_metrics_show_the_points(loyalty, customers, store_id):
    cid = (await create_customer(customers, store_id)).customer_id
    await add(loyalty, store_id, cid, 6000)
    await redeem(loyalty, store_id, cid, 1000)
    metrics = (
        await customers.GetCustomerMetrics(
            customers_pb.GetCustomerMetricsRequest(store_id=store_id, customer_id=cid)
        )
    ).metrics
    shown = {m.name: m.int_value for m in metrics if m.source == "loyalty"}
    assert shown == {"points_balance": 5000, "lifetime_points": 6000, "tier": T.LOYALTY_TIER_GOLD}
