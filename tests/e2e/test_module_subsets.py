"""Any subset of modules whose dependencies are present runs on its own: only the
chosen modules' migration branches are applied (so a database may never have seen
another module's tables) and only their servicers are mounted. Customers is the base;
orders and loyalty each need it and neither needs the other."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import pytest
from commerce.customers.v1 import customer_service_pb2_grpc
from commerce.loyalty.v1 import customer_loyalty_service_pb2 as loyalty_pb
from commerce.loyalty.v1 import customer_loyalty_service_pb2_grpc
from commerce.orders.v1 import order_service_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import inspect

from services.core.db.engine import create_engine
from services.core.settings import Settings
from services.migrations import upgrade
from tests.conftest import TEST_BCRYPT_ROUNDS
from tests.e2e.helpers import PASSWORD, create_customer, create_order, pb, serving
from tests.errors import rpc_error
from tests.orm import UnitOfWork, create_session_factory, create_store

SERVICES = {
    "customers": {"commerce.customers.v1.CustomerService"},
    "orders": {"commerce.orders.v1.OrderService", "commerce.orders.v1.CustomerOrderService"},
    "loyalty": {"commerce.loyalty.v1.CustomerLoyaltyService"},
}
TABLES = {
    "customers": {"customers", "customer_addresses"},
    "orders": {"orders", "order_line_items"},
    "loyalty": {"loyalty_accounts", "loyalty_movements"},
}


async def migrated_store(url: str, modules: list[str]) -> tuple[int, set[str]]:
    """Applies the chosen modules' branches only; a store id and the tables created."""
    for module in modules:  # Alembic runs its own event loop: off this one
        await asyncio.to_thread(upgrade, url, f"{module}@head")
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.connect() as connection:
            tables = await connection.run_sync(lambda sync: set(inspect(sync).get_table_names()))
        async with UnitOfWork(create_session_factory(engine)) as uow:
            store_id = (await create_store(uow.session, "subset")).id
            await uow.commit()
    finally:
        await engine.dispose()
    return store_id, tables


@pytest.mark.parametrize(
    "modules",
    [
        ["customers"],
        ["customers", "orders"],
        ["customers", "loyalty"],
        ["customers", "orders", "loyalty"],
    ],
    ids="+".join,
)
async def test_a_subset_of_modules_runs_alone(tmp_path, modules):
    url = f"sqlite+aiosqlite:///{tmp_path / 'subset.db'}"
    store_id, tables = await migrated_store(url, modules)
    for module, module_tables in TABLES.items():
        assert (module_tables <= tables) == (module in modules), module

    async with serving(Settings(database_url=url, bcrypt_rounds=TEST_BCRYPT_ROUNDS), modules) as (
        _,
        channel,
    ):
        health = health_pb2_grpc.HealthStub(channel)
        for module, services in SERVICES.items():
            for service in services:
                check = health.Check(health_pb2.HealthCheckRequest(service=service))
                if module in modules:
                    assert (await check).status == health_pb2.HealthCheckResponse.SERVING
                else:
                    await rpc_error(check, grpc.StatusCode.NOT_FOUND)

        customers = customer_service_pb2_grpc.CustomerServiceStub(channel)
        ann = await create_customer(customers, store_id, password=PASSWORD)
        login = await customers.AuthenticateCustomer(
            pb.AuthenticateCustomerRequest(store_id=store_id, email=ann.email, password=PASSWORD)
        )
        assert login.customer == ann

        orders = order_service_pb2_grpc.OrderServiceStub(channel)
        placing = create_order(orders, store_id, ann.customer_id)
        loyalty = customer_loyalty_service_pb2_grpc.CustomerLoyaltyServiceStub(channel)
        adding = loyalty.AddLoyaltyPoints(
            loyalty_pb.AddLoyaltyPointsRequest(
                store_id=store_id,
                customer_id=ann.customer_id,
                points=10,
                reason="hello",
                request_id=str(uuid.uuid4()),
            )
        )
        if "orders" in modules:
            assert (await placing).total_minor == 1000
        else:
            await rpc_error(placing, grpc.StatusCode.UNIMPLEMENTED)
        if "loyalty" in modules:
            assert (await adding).loyalty.points_balance == 10
        else:
            await rpc_error(adding, grpc.StatusCode.UNIMPLEMENTED)

        # Customers serves the metrics of whichever consumers are mounted.
        metrics = await customers.GetCustomerMetrics(
            pb.GetCustomerMetricsRequest(store_id=store_id, customer_id=ann.customer_id)
        )
        assert {metric.source for metric in metrics.metrics} == set(modules) - {"customers"}
