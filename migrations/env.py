"""Alembic environment (async). The URL comes from the caller (`commerce migrate`,
the tests) or else from the same settings the server reads."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

# Importing the models registers each module's tables in Base.metadata.
import services.customers.models
import services.loyalty.models
import services.orders.models  # noqa: F401
from services.core.db import idempotency, outbox, stores  # noqa: F401
from services.core.db.engine import Base, create_engine
from services.core.settings import Settings

config = context.config
target_metadata = Base.metadata


def database_url() -> str:
    return config.attributes.get("database_url") or Settings().database_url


def run_migrations_offline() -> None:
    context.configure(
        url=database_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        # SQLite alters tables by copying them; batch mode does that for us.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


async def run_migrations_online() -> None:
    engine = create_engine(
        database_url(), pool_size=1, pooler=config.attributes.get("database_pooler", "none")
    )
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    asyncio.run(run_migrations_online())
