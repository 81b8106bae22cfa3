"""GetCustomerOrderStats answers from the kept statistics, through real gRPC, as the
orders say after creates and cancels; `commerce order-stats check` finds a kept row
changed by hand, exits 1, and with --repair mends it."""

from __future__ import annotations

import asyncio

from commerce.orders.v1 import customer_order_service_pb2 as pb
from commerce.orders.v1 import order_service_pb2 as orders_pb
from sqlalchemy import text

from services.orders import queries
from services.orders.messages import stats_to_proto
from tests.e2e.helpers import create_customer, create_order, line
from tests.process import clean_environment, commerce


async def stats_and_aggregate(customer_orders, database, store_id: int, customer_id: int):
    request = pb.GetCustomerOrderStatsRequest(store_id=store_id, customer_id=customer_id)
    answered = (await customer_orders.GetCustomerOrderStats(request)).stats
    async with database.reading(store_id) as uow:
        aggregated = await queries.aggregated_order_stats(uow, customer_id)
    return answered, stats_to_proto(aggregated)


async def cancel(orders, store_id: int, order_id: int) -> None:
    await orders.CancelOrder(
        orders_pb.CancelOrderRequest(store_id=store_id, order_id=order_id, reason="no longer")
    )


async def test_statistics_follow_creates_and_cancels(
    orders, customers, customer_orders, database, store_id
):
    ann = (await create_customer(customers, store_id)).customer_id
    placed = [
        await create_order(
            orders, store_id, ann, currency_code=currency, line_items=[line(unit_price_minor=p)]
        )
        for p, currency in ((100, "EUR"), (250, "USD"), (300, "EUR"), (999, "EUR"))
    ]
    answered, aggregated = await stats_and_aggregate(customer_orders, database, store_id, ann)
    assert answered == aggregated
    assert answered.total_orders == 4
    # The latest and the earliest go, then concurrently a middle one and a new one.
    await cancel(orders, store_id, placed[3].order_id)
    await cancel(orders, store_id, placed[0].order_id)
    await asyncio.gather(
        cancel(orders, store_id, placed[2].order_id),
        create_order(orders, store_id, ann, currency_code="JPY"),
    )
    answered, aggregated = await stats_and_aggregate(customer_orders, database, store_id, ann)
    assert answered == aggregated
    assert [money.currency_code for money in answered.total_spent] == ["JPY", "USD"]


async def test_the_check_reports_drift_and_repairs_it(
    orders, customers, customer_orders, database, database_url, sessions, store_id
):
    customer_ids = [(await create_customer(customers, store_id)).customer_id for _ in range(5)]
    for n, customer_id in enumerate(customer_ids):
        for currency in ("EUR", "USD")[: 1 + n % 2]:
            await create_order(orders, store_id, customer_id, currency_code=currency)
    env = clean_environment(DATABASE_URL=database_url)
    check = ("order-stats", "check", "--store", str(store_id), "--batch", "2")
    clean = commerce(*check, env=env)
    assert clean.stdout.splitlines() == ["checked 1 store: 0 customers drifted"]

    before = [
        await stats_and_aggregate(customer_orders, database, store_id, customer_id)
        for customer_id in customer_ids
    ]
    second, fourth = customer_ids[1], customer_ids[3]
    async with sessions() as session:  # an operator's manual changes
        await session.execute(
            text(
                "UPDATE customer_order_stats SET order_count = 7, total_minor = 5"
                " WHERE store_id = :s AND customer_id = :c AND currency_code = 'USD'"
            ),
            {"s": store_id, "c": second},
        )
        await session.execute(
            text("DELETE FROM customer_order_stats WHERE store_id = :s AND customer_id = :c"),
            {"s": store_id, "c": fourth},
        )
        await session.commit()

    found = commerce(*check, env=env, check=False)
    assert found.returncode == 1
    lines = found.stdout.splitlines()
    assert lines[-1] == "checked 1 store: 2 customers drifted"
    assert [entry.split(" (slot")[0] for entry in lines[:-1]] == [
        f"store {store_id} customer {second} USD",
        f"store {store_id} customer {fourth} EUR",
        f"store {store_id} customer {fourth} USD",
    ]
    assert "expected 1 orders, total 1000," in lines[0]
    assert "kept 7 orders, total 5," in lines[0]
    assert lines[1].endswith("kept none")

    repaired = commerce(*check, "--repair", env=env)
    assert repaired.stdout.splitlines() == [
        *lines[:-1],
        "checked 1 store: 2 customers drifted (repaired)",
    ]
    assert commerce(*check, env=env).stdout.splitlines() == clean.stdout.splitlines()
    after = [
        await stats_and_aggregate(customer_orders, database, store_id, customer_id)
        for customer_id in customer_ids
    ]
    assert after == before
