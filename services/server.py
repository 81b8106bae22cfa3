"""The composition root: one grpc.aio server hosting the chosen modules, with health
and reflection. The only place that knows every module."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from sqlalchemy.ext.asyncio import AsyncEngine

from services.core.database import create_engine
from services.core.grpc_errors import ErrorMappingInterceptor
from services.core.modules import ModuleContext, MountFunction
from services.core.pagination import PageTokenCodec
from services.core.passwords import PasswordHasher
from services.core.settings import Settings
from services.core.tenancy import TenantDatabase
from services.customers.servicer import mount as mount_customers

logger = logging.getLogger(__name__)

# Every module the process can host, by the name `serve --services` takes.
MODULES: dict[str, MountFunction] = {
    "customers": mount_customers,
}

DEFAULT_GRACE_SECONDS = 10.0


class Application:
    """A configured server: `start()` binds and serves, `stop()` drains and closes."""

    def __init__(self, settings: Settings, module_names: Sequence[str] | None = None) -> None:
        names = list(module_names or MODULES)
        unknown = sorted(set(names) - set(MODULES))
        if unknown:
            raise ValueError(f"unknown module(s) {', '.join(unknown)}; known: {', '.join(MODULES)}")
        self.settings = settings
        self.module_names = names
        self.engine: AsyncEngine = create_engine(
            settings.database_url, pool_size=settings.db_pool_size
        )
        self.passwords = PasswordHasher(settings.bcrypt_rounds, settings.password_hash_workers)
        self.health = health.aio.HealthServicer()
        self.server = grpc.aio.server(interceptors=[ErrorMappingInterceptor()])
        self.port = 0
        self._service_names: list[str] = []

    async def start(self, address: str | None = None) -> int:
        """Mounts the modules, binds `address` (default: the settings') and serves.
        Returns the bound port, useful with port 0."""
        context = ModuleContext(
            settings=self.settings,
            database=TenantDatabase(
                self.engine, store_cache_seconds=self.settings.store_cache_seconds
            ),
            passwords=self.passwords,
            page_tokens=PageTokenCodec(self.settings.page_token_secret),
        )
        for name in self.module_names:
            self._service_names += MODULES[name](self.server, context)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            [
                *self._service_names,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ],
            self.server,
        )
        self.port = self.server.add_insecure_port(address or self.settings.listen_address)
        if self.port == 0:
            raise OSError(f"cannot listen on {address or self.settings.listen_address}")
        await self.server.start()
        for service in ["", *self._service_names]:
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        logger.info("serving %s on port %d", ", ".join(self.module_names), self.port)
        return self.port

    async def stop(self, grace: float = DEFAULT_GRACE_SECONDS) -> None:
        """Reports NOT_SERVING, lets in-flight RPCs finish within `grace` seconds, then
        closes the database pool and the password threads."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        await self.engine.dispose()
        self.passwords.close()


async def serve(
    settings: Settings,
    module_names: Sequence[str] | None = None,
    grace: float = DEFAULT_GRACE_SECONDS,
) -> None:
    """Runs until SIGTERM or SIGINT, then stops gracefully."""
    app = Application(settings, module_names)
    await app.start()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await stopping.wait()
    logger.info("shutting down (grace %.1fs)", grace)
    await app.stop(grace)
