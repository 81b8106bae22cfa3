"""`commerce serve` on a throwaway PostgreSQL database, for the scripts that measure
a real server process (bench.login_storm, bench.fuzz)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import grpc
from commerce.customers.v1 import customer_service_pb2 as pb
from commerce.customers.v1 import customer_service_pb2_grpc

from bench.servers import COMMERCE, ROOT, free_port
from bench.urls import asyncpg_dsn, sqlalchemy_url


@asynccontextmanager
async def commerce_server(
    database_url: str,
    *,
    bcrypt_rounds: int = 12,
    stores: int = 2,
    serve_flags: tuple[str, ...] = (),
) -> AsyncIterator[tuple[str, int]]:
    """(target, server pid) of a server on a fresh database with `stores` stores
    (ids 1, 2, ...), given `serve_flags`; the database is dropped at the end."""
    admin_dsn = asyncpg_dsn(database_url)
    name = f"commerce_bench_{os.getpid()}"
    admin = await asyncpg.connect(admin_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    env = {
        **os.environ,
        "DATABASE_URL": sqlalchemy_url(admin_dsn.rsplit("/", 1)[0] + f"/{name}"),
        "COMMERCE_BCRYPT_ROUNDS": str(bcrypt_rounds),
        "COMMERCE_LOG_LEVEL": "WARNING",
    }
    target = f"127.0.0.1:{free_port()}"
    try:
        await _commerce(env, "migrate")
        for number in range(1, stores + 1):
            await _commerce(env, "stores", "create", "--name", f"Store {number}")
        with tempfile.TemporaryFile() as log:
            server = await asyncio.create_subprocess_exec(
                COMMERCE,
                "serve",
                "--listen-address",
                target,
                *serve_flags,
                env=env,
                cwd=ROOT,
                stdout=log,
                stderr=log,
            )
            try:
                await _answering(target)
                yield target, server.pid
            finally:
                server.terminate()
                await server.wait()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def _commerce(env: dict[str, str], *arguments: str) -> None:
    process = await asyncio.create_subprocess_exec(
        COMMERCE, *arguments, env=env, cwd=ROOT, stdout=subprocess.DEVNULL
    )
    if await process.wait() != 0:
        raise RuntimeError(f"commerce {' '.join(arguments)} failed")


_NOT_YET = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


async def _answering(target: str) -> None:
    """Until the server answers a call (any status but UNAVAILABLE will do)."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = customer_service_pb2_grpc.CustomerServiceStub(channel)
        for _ in range(300):
            try:
                await stub.GetCustomer(pb.GetCustomerRequest(store_id=1, customer_id=1), timeout=1)
                return
            except grpc.aio.AioRpcError as error:
                if error.code() not in (
                    grpc.StatusCode.UNAVAILABLE,
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                ):
                    return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"no server answered on {target}")
