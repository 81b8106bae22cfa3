"""The REST peer: the service a team would otherwise build for the same reads, in the
seed architecture's REST shape, so the benchmark has something to compare the gRPC
server with.

FastAPI served by uvicorn, SQLAlchemy's async ORM over asyncpg, Pydantic response
models: the common Python stack, written the common way. It maps the tables that
`commerce migrate` creates with declarative models of its own and imports nothing
from `services`, as a separate team's code would not.

Endpoints (the store is the `X-Store-Id` header: 400 when missing or not a positive
integer):

    GET /api/store/customers/{customer_id}              the customer
    GET /api/store/customers/{customer_id}/order-stats  their order statistics

Both answer 404 with a JSON body for a customer the store does not have. The JSON
carries the fields of the gRPC messages (commerce.customers.v1.Customer,
commerce.orders.v1.CustomerOrderStats) under their proto names, with the statistics
computed by the same aggregate as services/orders/statistics.py.

Usage: python -m bench.rest_peer --database-url URL --port N [--pool-size 10]; prints
"rest peer serving on N" once it accepts connections, and stops on SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from types import FrameType
from typing import Annotated

import uvicorn
from fastapi import Depends, FastAPI, Header, HTTPException, Request
from pydantic import BaseModel
from sqlalchemy import BigInteger, DateTime, String, and_, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from bench.urls import sqlalchemy_url

# Stored as this string by the orders service; cancelled orders count in no statistic.
CANCELLED = "cancelled"


# -- ORM models: only the columns this service reads ---------------------------------


class Base(DeclarativeBase):
    pass


class CustomerRow(Base):
    __tablename__ = "customers"

    store_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    customer_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    customer_number: Mapped[str] = mapped_column(String(50))
    email: Mapped[str] = mapped_column(String(255))
    hashed_password: Mapped[str | None] = mapped_column(String(255))
    first_name: Mapped[str] = mapped_column(String(100))
    last_name: Mapped[str] = mapped_column(String(100))
    phone: Mapped[str] = mapped_column(String(50))
    marketing_consent: Mapped[bool]
    preferred_language: Mapped[str] = mapped_column(String(35))
    is_active: Mapped[bool]
    revision: Mapped[int]
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class OrderRow(Base):
    __tablename__ = "orders"

    store_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    order_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    customer_id: Mapped[int | None] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(20))
    currency_code: Mapped[str] = mapped_column(String(3))
    total_minor: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


# -- response models -------------------------------------------------------------------


class Customer(BaseModel):
    """commerce.customers.v1.Customer, with is_active for its status enum. The password
    hash never leaves the service; has_password says whether there is one."""

    store_id: int
    customer_id: int
    customer_number: str
    email: str
    first_name: str
    last_name: str
    phone: str
    marketing_consent: bool
    preferred_language: str
    is_active: bool
    has_password: bool
    create_time: datetime
    update_time: datetime
    etag: str

    @classmethod
    def of(cls, row: CustomerRow) -> Customer:
        return cls(
            store_id=row.store_id,
            customer_id=row.customer_id,
            customer_number=row.customer_number,
            email=row.email,
            first_name=row.first_name,
            last_name=row.last_name,
            phone=row.phone,
            marketing_consent=row.marketing_consent,
            preferred_language=row.preferred_language,
            is_active=row.is_active,
            has_password=row.hashed_password is not None,
            create_time=row.created_at,
            update_time=row.updated_at,
            # The gRPC service's etag for the same revision.
            etag=f"r{row.revision}",
        )


class Money(BaseModel):
    currency_code: str
    amount_minor: int


class CustomerOrderStats(BaseModel):
    """commerce.orders.v1.CustomerOrderStats: one Money per currency, sorted by
    currency code; the times are null for a customer without (counted) orders."""

    store_id: int
    customer_id: int
    total_orders: int
    total_spent: list[Money]
    avg_order_value: list[Money]
    first_order_time: datetime | None
    last_order_time: datetime | None


class Problem(BaseModel):
    """The body of every error answer (FastAPI's HTTPException shape)."""

    detail: str


# -- the application ---------------------------------------------------------------------


def _store_id(x_store_id: Annotated[str | None, Header()] = None) -> int:
    """The store of the request. Read as text and checked here, so a bad header is a
    400 like a missing one (FastAPI's own int parsing would answer 422)."""
    if x_store_id is None:
        raise HTTPException(400, detail="the X-Store-Id header is required")
    try:
        store_id = int(x_store_id)
    except ValueError:
        raise HTTPException(400, detail="X-Store-Id must be a positive integer") from None
    if store_id <= 0:
        raise HTTPException(400, detail="X-Store-Id must be a positive integer")
    return store_id


def _customer_id(customer_id: int) -> int:
    # As the gRPC service: a non-positive id is a bad request, not an unknown customer.
    if customer_id <= 0:
        raise HTTPException(400, detail="customer_id must be a positive customer id")
    return customer_id


def _not_found(customer_id: int) -> HTTPException:
    return HTTPException(404, detail=f"customer {customer_id} not found")


async def _session(request: Request) -> AsyncIterator[AsyncSession]:
    """A session for the request, closed (its transaction rolled back) after it."""
    sessions: async_sessionmaker[AsyncSession] = request.app.state.sessions
    async with sessions() as session:
        yield session


# Module-level, as FastAPI resolves these annotations in the module's namespace.
Session = Annotated[AsyncSession, Depends(_session)]
StoreId = Annotated[int, Depends(_store_id)]
CustomerId = Annotated[int, Depends(_customer_id)]
ERRORS: dict[int | str, dict[str, object]] = {400: {"model": Problem}, 404: {"model": Problem}}


def create_app(database_url: str, *, pool_size: int = 10) -> FastAPI:
    """The REST peer's application on its own connection pool. No overflow beyond
    `pool_size`, like the gRPC server's pool (services/core/database.py), so both
    sides of a benchmark hold the same number of database connections."""
    engine = create_async_engine(
        sqlalchemy_url(database_url), pool_size=pool_size, max_overflow=0, pool_recycle=3600
    )
    sessions = async_sessionmaker(engine, expire_on_commit=False)

    @asynccontextmanager
    async def lifespan(application: FastAPI) -> AsyncIterator[None]:
        application.state.sessions = sessions
        yield
        await engine.dispose()

    app = FastAPI(title="commerce REST peer", lifespan=lifespan)

    @app.get("/api/store/customers/{customer_id}", responses=ERRORS)
    async def get_customer(customer_id: CustomerId, store_id: StoreId, db: Session) -> Customer:
        row = await db.get(CustomerRow, (store_id, customer_id))
        if row is None:
            raise _not_found(customer_id)
        return Customer.of(row)

    @app.get("/api/store/customers/{customer_id}/order-stats", responses=ERRORS)
    async def get_customer_order_stats(
        customer_id: CustomerId, store_id: StoreId, db: Session
    ) -> CustomerOrderStats:
        # services/orders/statistics.py's aggregate: the customer LEFT JOIN its
        # orders that count (not cancelled), grouped by currency. No row: no such
        # customer; a single row with a NULL currency: a customer without orders.
        counted = and_(
            OrderRow.store_id == CustomerRow.store_id,
            OrderRow.customer_id == CustomerRow.customer_id,
            OrderRow.status != CANCELLED,
        )
        statement = (
            select(
                OrderRow.currency_code,
                func.count(OrderRow.order_id),
                func.sum(OrderRow.total_minor),
                func.min(OrderRow.created_at),
                func.max(OrderRow.created_at),
            )
            .select_from(CustomerRow)
            .outerjoin(OrderRow, counted)
            .where(CustomerRow.store_id == store_id, CustomerRow.customer_id == customer_id)
            .group_by(OrderRow.currency_code)
            .order_by(OrderRow.currency_code)
        )
        rows = (await db.execute(statement)).all()
        if not rows:
            raise _not_found(customer_id)
        counted_rows = [row for row in rows if row[0] is not None]
        # sum(bigint) is numeric in PostgreSQL: back to an exact int.
        totals = [(code, count, int(total)) for code, count, total, _, _ in counted_rows]
        return CustomerOrderStats(
            store_id=store_id,
            customer_id=customer_id,
            total_orders=sum(count for _, count, _ in totals),
            total_spent=[
                Money(currency_code=code, amount_minor=total) for code, _, total in totals
            ],
            avg_order_value=[
                # The mean rounded half up (totals are never negative), in integers,
                # as the gRPC service rounds it.
                Money(currency_code=code, amount_minor=(2 * total + count) // (2 * count))
                for code, count, total in totals
            ],
            first_order_time=min((row[3] for row in counted_rows), default=None),
            last_order_time=max((row[4] for row in counted_rows), default=None),
        )

    return app


# -- serving ---------------------------------------------------------------------------


class _AnnouncingServer(uvicorn.Server):
    """A uvicorn server that says on standard output when it accepts connections: a
    benchmark waits for that line instead of polling the port."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            # Which event loop and HTTP implementation uvicorn chose: they decide much
            # of its speed, and depend on what is installed (uvloop, httptools).
            loop = type(asyncio.get_running_loop()).__module__
            http = self.config.http_protocol_class.__module__
            print(f"rest peer: event loop {loop}, http {http}", file=sys.stderr, flush=True)
            # The bound port, which differs from the asked one for --port 0.
            listening = self.servers[0].sockets[0].getsockname()[1]
            print(f"rest peer serving on {listening}", flush=True)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.rest_peer",
        description="Serve the REST peer of the commerce services until SIGTERM.",
    )
    parser.add_argument(
        "--database-url",
        required=True,
        help="postgresql:// or postgresql+asyncpg:// URL of a database migrated by "
        "`commerce migrate`",
    )
    parser.add_argument("--port", type=int, required=True, help="TCP port (0: any free one)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument(
        "--pool-size", type=int, default=10, help="database connections (default 10)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        app = create_app(args.database_url, pool_size=args.pool_size)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    # What `pip install fastapi uvicorn` gives a team (asyncio, h11, one process, no
    # reload) but for the access log: a line per request would cost more than some of
    # the requests. h11 by name: this project also installs httptools (for its HTTP
    # gateway), which uvicorn would otherwise pick.
    server = _AnnouncingServer(
        uvicorn.Config(app, host=args.host, port=args.port, access_log=False, http="h11")
    )

    def stop(signum: int, frame: FrameType | None) -> None:
        server.handle_exit(signum, frame)

    # uvicorn handles SIGTERM and SIGINT while it serves, then raises the signal again
    # for the handler that was there before it. Ours makes that a normal exit (status
    # 0) rather than death by signal, and also stops a server still starting up.
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
