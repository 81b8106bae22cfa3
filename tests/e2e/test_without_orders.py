"""Disabling orders means not running its migration branch and not mounting it:
customers keeps working on a database that has never seen an orders table."""

from __future__ import annotations

import asyncio

import grpc
from commerce.customers.v1 import customer_service_pb2_grpc
from sqlalchemy import inspect

from services.core.database import UnitOfWork, create_engine, create_session_factory
from services.core.settings import Settings
from services.core.stores import create_store
from services.migrations import upgrade
from services.server import Application
from tests.conftest import TEST_BCRYPT_ROUNDS
from tests.e2e.helpers import PASSWORD, create_customer, pb


async def test_customers_alone_on_a_database_without_orders(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path / 'customers-only.db'}"
    # The core and customers branches, not orders (Alembic runs its own event loop).
    await asyncio.to_thread(upgrade, url, "customers@head")
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.connect() as connection:
            tables = await connection.run_sync(lambda sync: set(inspect(sync).get_table_names()))
        async with UnitOfWork(create_session_factory(engine)) as uow:
            store_id = (await create_store(uow.session, "no orders here")).id
            await uow.commit()
    finally:
        await engine.dispose()
    assert "customers" in tables
    assert not {"orders", "order_line_items"} & tables

    settings = Settings(database_url=url, bcrypt_rounds=TEST_BCRYPT_ROUNDS)
    app = Application(settings, ["customers"])
    port = await app.start("127.0.0.1:0")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            customers = customer_service_pb2_grpc.CustomerServiceStub(channel)
            ann = await create_customer(customers, store_id, password=PASSWORD)
            login = await customers.AuthenticateCustomer(
                pb.AuthenticateCustomerRequest(
                    store_id=store_id, email=ann.email, password=PASSWORD
                )
            )
            assert login.customer == ann
            metrics = await customers.GetCustomerMetrics(
                pb.GetCustomerMetricsRequest(store_id=store_id, customer_id=ann.customer_id)
            )
            assert list(metrics.metrics) == []
    finally:
        await app.stop(grace=0)
