"""The composition root: one grpc.aio server hosting the chosen modules, with health,
reflection, TLS, metrics and, when asked, the HTTP gateway in front of it. The only
place that knows every module."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import signal
import socket
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias, cast

import grpc
from google.protobuf import descriptor_pool
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from sqlalchemy import literal, select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import QueuePool

from services.core.db.customer_data import CustomerDataRegistry
from services.core.db.engine import create_engine, is_sqlite, utc_now
from services.core.db.idempotency import forget_expired
from services.core.db.replica import ReadReplica
from services.core.db.retention import Purge, RetentionRegistry
from services.core.db.statements import Statement, Transaction
from services.core.db.unit_of_work import TenantDatabase
from services.core.domain.customer_metrics import CustomerMetricsRegistry
from services.core.domain.pagination import PageTokenCodec
from services.core.domain.passwords import PasswordHasher
from services.core.events.relay import EventRelay
from services.core.events.servicer import mount as mount_events
from services.core.events.signals import Signal
from services.core.http.gateway import gateway_app
from services.core.http.listener import HttpListener, HttpTls
from services.core.modules import ModuleContext, MountFunction
from services.core.rpc.callers import CallerAuthInterceptor, load_callers
from services.core.rpc.interceptor import guarded_handler, write_stream
from services.core.rpc.metrics import serve_metrics
from services.core.rpc.reflection import enable_reflection
from services.core.rpc.statuses import retry_status
from services.core.settings import Settings
from services.customers.servicer import mount as mount_customers
from services.listen import CannotListen, check_free, listening_sockets
from services.loyalty.servicer import mount as mount_loyalty
from services.orders.servicer import mount as mount_orders

if TYPE_CHECKING:  # imported only when tracing is on (services.core.tracing)
    from services.core.tracing import Tracing

logger = logging.getLogger(__name__)

# Every module the process can host, by the name `serve --services` takes.
MODULES: dict[str, MountFunction] = {
    "customers": mount_customers,
    "orders": mount_orders,
    "loyalty": mount_loyalty,
    # The change feed (commerce.events.v1.EventService): every module's events.
    "events": mount_events,
}

# Expired request_ids go in batches of PURGE_BATCH, every PURGE_INTERVAL seconds.
PURGE_BATCH = 1000
PURGE_INTERVAL = 600.0

Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
# The health service name that says whether the read replica serves reads (SERVING)
# or they all go to the primary (NOT_SERVING); the server's own status ("") follows
# the primary alone.
READ_REPLICA_HEALTH = "commerce.read_replica"


def module_problem(names: Sequence[str] | None) -> str | None:
    """Why these module names cannot be served, or None when they can."""
    unknown = sorted(set(names or ()) - set(MODULES))
    if not unknown:
        return None
    return f"unknown module(s) {', '.join(unknown)}; known: {', '.join(MODULES)}"


# What the health service asks the database.
_PROBE = Statement(select(literal(1)))


class Application:
    """A configured server: `start()` binds and serves, `stop()` drains and closes."""

    def __init__(
        self,
        settings: Settings,
        module_names: Sequence[str] | None = None,
        *,
        share_port: bool = False,
        tracing: Tracing | None = None,
    ) -> None:
        """`share_port`: listen with SO_REUSEPORT, for the workers of one supervisor
        (services.supervisor) and only for them; alone, a used address is refused.
        `tracing`: with the tracing setting on, the spans' destination instead of the
        one the OTEL_* variables describe (the tests' in-memory exporter)."""
        names = list(module_names or settings.module_names or MODULES)
        if problem := module_problem(names):
            raise ValueError(problem)
        self.settings = settings
        self.module_names = names
        self.engine: AsyncEngine = create_engine(
            settings.database_url,
            pool_size=settings.db_pool_size,
            connect_timeout=settings.db_connect_timeout,
            pooler=settings.database_pooler,
        )
        self.database = TenantDatabase(
            self.engine, store_cache_seconds=settings.store_cache_seconds
        )
        self.replica: ReadReplica | None = None
        if settings.read_database_url:
            self.replica = ReadReplica(
                settings.read_database_url,
                primary_url=settings.database_url,
                max_lag_seconds=settings.read_replica_max_lag_seconds,
                pool_size=settings.db_pool_size,
                connect_timeout=settings.db_connect_timeout,
            )
            self.database.replica = self.replica
        self.customer_metrics = CustomerMetricsRegistry()
        self.customer_data = CustomerDataRegistry()
        self.retention = RetentionRegistry()
        # Units of work of this process notify `events_committed`; the relay notifies
        # `events_placed` (services.core.events).
        self.events_committed = Signal()
        self.events_placed = Signal()
        self.database.events_committed = self.events_committed.notify
        self.passwords = PasswordHasher(settings.bcrypt_rounds, settings.password_hash_workers)
        self.health = health.aio.HealthServicer()
        # The guard and the drain wrap each handler as it is registered (start()):
        # without interceptors, gRPC finds a call's handler without an interceptor
        # chain, which costs more per call than either wrapper.
        self.drain = Drain()
        self._finish_abandoned_calls = is_sqlite(settings.database_url)
        interceptors: list[grpc.aio.ServerInterceptor] = []
        self.tracing = _tracing(settings, tracing)
        if self.tracing is not None:
            self.database.trace_statements = self.tracing.transaction
            self.passwords.trace_work = self.tracing.work
            # Around the guarded handler: the span covers its error mapping and log line.
            interceptors.append(_tracing_interceptor(self.tracing))
        if settings.caller_tokens_file:
            # First, so that a refused call reaches no servicer.
            interceptors.insert(0, CallerAuthInterceptor(load_callers(settings.caller_tokens_file)))
        self.share_port = share_port
        self.server = grpc.aio.server(
            interceptors=interceptors or None,
            maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
            options=server_options(settings, share_port=share_port),
        )
        self.port = 0
        self.address = ""
        self.http_port = 0
        self.http: HttpListener | None = None
        self._gateway_channel: grpc.aio.Channel | None = None
        self._private_directory = ""
        self.service_names: list[str] = []
        self._background: list[asyncio.Task[None]] = []
        self.relay: EventRelay | None = None
        self._status: int = NOT_SERVING

    async def start(self, address: str | None = None) -> int:
        """Mounts the modules, binds `address` (default: the settings') and serves.
        Returns the bound port, useful with port 0. Raises CannotListen when the
        address is taken or cannot be bound."""
        context = ModuleContext(
            settings=self.settings,
            database=self.database,
            passwords=self.passwords,
            page_tokens=PageTokenCodec(self.settings.page_token_secret),
            customer_metrics=self.customer_metrics,
            customer_data=self.customer_data,
            retention=self.retention,
            events_placed=self.events_placed,
        )
        # Typed as the server its callers expect: they only add handlers to it.
        registered = cast(grpc.aio.Server, GuardedRegistration(self.server, self._guarded))
        for name in self.module_names:
            self.service_names += MODULES[name](registered, context)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, registered)
        enable_reflection(registered, [*self.service_names, HEALTH_SERVICE])
        address = address or self.settings.listen_address
        credentials = server_credentials(self.settings)
        if not self.share_port:
            check_free(address)  # a clear error, where gRPC would log one of its own
        try:
            if credentials is None:
                self.port = self.server.add_insecure_port(address)
            else:
                self.port = self.server.add_secure_port(address, credentials)
        except RuntimeError as error:  # gRPC's "Failed to bind to address ..."
            raise CannotListen(f"cannot listen on {address}: {error}".split(";")[0]) from None
        self.address = f"{address.rpartition(':')[0]}:{self.port}"
        http_sockets = self._bind_http() if self.settings.http_listen_address else []
        # Health is settled before the port answers: a probe that sees the server up
        # must also find every service's status, never NOT_FOUND for a moment.
        reachable = await self.database_reachable()
        await self._report(SERVING if reachable else NOT_SERVING)
        if not reachable:
            logger.warning(
                "database %s (setting database_url) is unreachable: health says "
                "NOT_SERVING until it answers",
                self.database_label,
            )
        if self.replica is not None:
            await self._probe_replica(first=True)
        await self.server.start()
        if http_sockets:
            await self._start_gateway(http_sockets)
        self._background = [
            asyncio.create_task(self._watch_database()),
            asyncio.create_task(self._forget_expired_request_ids()),
        ]
        if self.replica is not None:
            self._background.append(asyncio.create_task(self._watch_replica()))
        if self.settings.event_relay:
            self.relay = EventRelay(
                self.database,
                self.settings,
                events_committed=self.events_committed,
                events_placed=self.events_placed,
                report_database=False,  # _watch_database says so
            )
            self.relay.start()
        logger.info(
            "serving %s on %s (%s)",
            ", ".join(self.module_names),
            self.address,
            "TLS" if credentials else "plaintext",
        )
        return self.port

    def _bind_http(self) -> list[socket.socket]:
        """Binds the HTTP gateway's address, and gives the gateway a gRPC port of its
        own: a unix socket in a directory only this user may enter. The gateway's calls
        reach this process (not another worker on the shared port) whatever the gRPC
        port's TLS, and the server can tell them from any other caller
        (services.core.rpc.callers.CLIENT_ADDRESS_KEY)."""
        address = self.settings.http_listen_address
        sockets = listening_sockets(
            address, share_port=self.share_port, setting="http_listen_address"
        )
        self.http_port = sockets[0].getsockname()[1]
        self._private_directory = tempfile.mkdtemp(prefix="commerce-gateway-")  # mode 0700
        self.server.add_insecure_port(f"unix:{self._private_directory}/grpc.sock")
        return sockets

    async def _start_gateway(self, sockets: list[socket.socket]) -> None:
        limit = self.settings.max_message_bytes
        self._gateway_channel = grpc.aio.insecure_channel(
            f"unix:{self._private_directory}/grpc.sock",
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", limit),
            ],
        )
        pool = descriptor_pool.Default()
        services = [pool.FindServiceByName(name) for name in self.service_names]
        app = gateway_app(self._gateway_channel, services, max_message_bytes=limit)
        tls = None
        if self.settings.tls_cert_file:
            tls = HttpTls(
                self.settings.tls_cert_file,
                self.settings.tls_key_file,
                self.settings.tls_client_ca_file,
            )
        self.http = HttpListener(app, sockets, grace_seconds=self.settings.grace_seconds, tls=tls)
        await self.http.start()
        host = self.settings.http_listen_address.rpartition(":")[0]
        logger.info(
            "serving HTTP (REST and the Connect protocol) on %s:%d (%s)",
            host,
            self.http_port,
            "TLS" if tls else "plaintext",
        )

    @property
    def database_label(self) -> str:
        """The database URL without its password, fit for a log line."""
        return self.engine.url.render_as_string(hide_password=True)

    async def stop(self, grace: float | None = None) -> None:
        """Reports NOT_SERVING and refuses new calls with UNAVAILABLE (clients retry
        it, elsewhere), lets in-flight RPCs finish within `grace` seconds (default: the
        settings'), then closes the database pool and the password threads."""
        grace = self.settings.grace_seconds if grace is None else grace
        if self.relay is not None:
            # First, and with its lease handed back: a standby relays at once.
            await self.relay.stop()
        for task in self._background:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.health.enter_graceful_shutdown()
        # The HTTP listener stops accepting now and answers its requests in flight,
        # whose gRPC calls the drain below waits for like any other.
        http_stopped = asyncio.create_task(self.http.stop(grace)) if self.http else None
        # Draining in front of gRPC's own stop: once that stops, calls that reached the
        # process but no handler yet are cancelled, and CANCELLED is not retried.
        started = asyncio.get_running_loop().time()
        await self.drain.drain(grace)
        if http_stopped is not None:
            await http_stopped
        elapsed = asyncio.get_running_loop().time() - started
        await self.server.stop(max(grace - elapsed, 0.0))
        if self._gateway_channel is not None:
            await self._gateway_channel.close()
        if self._private_directory:
            shutil.rmtree(self._private_directory, ignore_errors=True)
        self.database.close()
        await self.engine.dispose()
        if self.replica is not None:
            await self.replica.close()
        self.passwords.close()
        if self.tracing is not None:
            # Exports what is still queued: in a thread, its deadline the exporters'.
            await asyncio.to_thread(self.tracing.close)

    def _guarded(self, method: str, handler: Handler) -> Handler:
        """A method's handler as the server serves it: the guard (deadline, statuses,
        metrics, the log line) around its behaviour, the drain around the guard."""
        return self.drain.wrap(
            method, guarded_handler(method, handler, finish=self._finish_abandoned_calls)
        )

    async def database_reachable(self) -> bool:
        try:
            async with asyncio.timeout(self.settings.db_connect_timeout):
                # The statements' own path: behind a transaction pooler a statement
                # through SQLAlchemy is prepared under a name of its own, which every
                # probe would leave on a server connection.
                async with self.database.maintenance(transaction=False) as statements:
                    await statements.scalar(_PROBE, {})
        except Exception as error:  # any failure means "not reachable now"
            logger.debug("database probe failed: %r", error)
            return False
        return True

    async def _watch_database(self) -> None:
        """Keeps health in step with the database: NOT_SERVING while it is out of reach,
        SERVING again once it answers."""
        while True:
            await asyncio.sleep(self.settings.health_check_interval)
            if self._every_connection_in_use():
                continue
            now = SERVING if await self.database_reachable() else NOT_SERVING
            if now != self._status:
                logger.warning(
                    "database %s", "reachable again" if now == SERVING else "unreachable"
                )
                await self._report(now)

    async def _watch_replica(self) -> None:
        """Keeps reads off the read replica while it is out of reach or too far behind
        (services.core.db.replica), and its health service in step."""
        while True:
            await asyncio.sleep(self.settings.health_check_interval)
            await self._probe_replica()

    async def _probe_replica(self, *, first: bool = False) -> None:
        assert self.replica is not None
        state = await self.replica.probe()
        if first and not state.usable:  # later changes log themselves
            logger.warning(
                "read replica %s (setting read_database_url) does not serve reads yet: %s",
                self.replica.label,
                state.reason,
            )
        await self.health.set(READ_REPLICA_HEALTH, SERVING if state.usable else NOT_SERVING)

    def _every_connection_in_use(self) -> bool:
        """True while calls hold every pooled connection (SQLite's only one, say). A
        probe would then time out waiting in the queue and report a busy database as
        unreachable; the calls themselves find out soon enough if it is gone."""
        pool = self.engine.pool
        return isinstance(pool, QueuePool) and pool.checkedout() >= pool.size()

    async def forget_expired_request_ids(self) -> int:
        """Deletes the request_ids older than the retention, and what the modules keep
        to answer their retries; returns how many request_ids."""
        before = utc_now() - timedelta(hours=self.settings.request_id_retention_hours)
        forgotten = await self._purge(_forget_request_ids, before)
        for name, purge in self.retention:
            if purged := await self._purge(purge, before):
                logger.info("purged %d expired %s", purged, name)
        return forgotten

    async def _purge(self, purge: Purge, before: datetime) -> int:
        """Runs `purge` one batch per transaction until a batch comes back short."""
        purged = 0
        while True:
            async with self.database.maintenance() as statements:
                deleted = await purge(statements, before, PURGE_BATCH)
                await statements.commit()
            purged += deleted
            if deleted < PURGE_BATCH:
                return purged

    async def _forget_expired_request_ids(self) -> None:
        """Keeps the idempotency keys (and what the modules keep with them) from
        growing without bound: at start, then every PURGE_INTERVAL seconds. Every
        worker does it; the deletes are idempotent."""
        while True:
            try:
                if forgotten := await self.forget_expired_request_ids():
                    logger.info("forgot %d expired request_ids", forgotten)
            except Exception as error:  # the database may be out of reach; try again later
                logger.warning("could not forget expired request_ids: %r", error)
            await asyncio.sleep(PURGE_INTERVAL)

    async def _report(self, status: int) -> None:
        self._status = status
        for service in ["", *self.service_names]:
            await self.health.set(service, status)


def _tracing(settings: Settings, given: Tracing | None) -> Tracing | None:
    """The process's tracing, open, when the setting asks for it and OTEL_SDK_DISABLED
    does not forbid it; None otherwise, and then nothing of it is even imported."""
    if not settings.tracing:
        return None
    from services.core.tracing import Tracing, sdk_disabled

    if sdk_disabled():
        logger.info("tracing off: OTEL_SDK_DISABLED=true")
        return None
    tracing = given or Tracing.from_environment()
    tracing.open()
    return tracing


def _tracing_interceptor(tracing: Tracing) -> grpc.aio.ServerInterceptor:
    from services.core.rpc.tracing import TracingInterceptor

    return TracingInterceptor(tracing.tracer)


async def _forget_request_ids(statements: Transaction, before: datetime, batch: int) -> int:
    return await forget_expired(statements, before, batch=batch)


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS from the settings' files, mutual when a client CA is given; None: plaintext."""
    if not settings.tls_cert_file:
        return None
    client_ca = (
        Path(settings.tls_client_ca_file).read_bytes() if settings.tls_client_ca_file else None
    )
    return grpc.ssl_server_credentials(
        [(Path(settings.tls_key_file).read_bytes(), Path(settings.tls_cert_file).read_bytes())],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


def server_options(settings: Settings, *, share_port: bool = False) -> list[tuple[str, int]]:
    """gRPC core channel arguments: limits, and keepalive so that a vanished peer (a
    crashed client, a dropped network) gives back its connection and calls."""
    keepalive_ms = int(settings.keepalive_seconds * 1000)
    timeout_ms = int(settings.keepalive_timeout_seconds * 1000)
    return [
        # Only a supervisor's workers share a port (services.supervisor, services.listen);
        # gRPC sets SO_REUSEPORT unless told not to.
        ("grpc.so_reuseport", int(share_port)),
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.keepalive_time_ms", keepalive_ms),
        ("grpc.keepalive_timeout_ms", timeout_ms),
        # This gRPC core times its pings out by this one, not by keepalive_timeout_ms
        # alone: without it a peer that stopped answering was still connected 8 s
        # after a 1-second timeout (test_keepalive_drops_a_peer_that_stopped_answering).
        ("grpc.http2.ping_timeout_ms", timeout_ms),
        ("grpc.keepalive_permit_without_calls", 1),
        # Clients may ping as often as every 10 s (a stricter floor makes gRPC close
        # connections of well-behaved clients with GOAWAY "too_many_pings").
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.http2.max_pings_without_data", 0),
        *_connection_age(settings),
    ]


def _connection_age(settings: Settings) -> list[tuple[str, int]]:
    """A connection's end of life, when set: a client learns of replicas added behind
    its DNS name only when it resolves again, which a closed connection makes it do."""
    if not settings.max_connection_age_seconds:
        return []
    return [
        ("grpc.max_connection_age_ms", int(settings.max_connection_age_seconds * 1000)),
        ("grpc.max_connection_age_grace_ms", int(settings.grace_seconds * 1000)),
    ]


async def serve(settings: Settings, *, share_port: bool = False) -> None:
    """Runs until SIGTERM or SIGINT, then stops gracefully. Raises CannotListen."""
    # Handlers first: a SIGTERM that comes while the server starts (a supervisor
    # stopping a worker it just replaced) must still mean "drain and exit 0".
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    app = Application(settings, share_port=share_port)
    try:
        await app.start()
    except BaseException:
        app.database.close()
        await app.engine.dispose()
        if app.replica is not None:
            await app.replica.close()
        app.passwords.close()
        if app.tracing is not None:
            app.tracing.close()
        raise
    if settings.metrics_address:
        serve_metrics(settings.metrics_address)
        logger.info("metrics on http://%s/metrics", settings.metrics_address)
    await stopping.wait()
    logger.info("shutting down (grace %.1fs)", settings.grace_seconds)
    await app.stop()


# What a call refused while the server drains tells its caller to wait: another
# replica or worker, or this one restarted, answers within about that.
DRAINING_RETRY_AFTER = timedelta(seconds=1)
# The drain ends once no call came for this long (callers honour the RetryInfo): gRPC's
# own stop then finds no call that reached the process unhandled, which it would cancel.
QUIET_SECONDS = 0.25


def _aio(behavior: Callable[..., Any]) -> Callable[..., AsyncIterator[Any]]:
    """A streaming behaviour as grpc.aio registers it (the stubs type the sync API's)."""
    return cast(Callable[..., AsyncIterator[Any]], behavior)


class GuardedRegistration:
    """The gRPC server as modules, health and reflection add their handlers to it:
    each method's handler is wrapped once, as it is added, by `wrap` (the method's
    full name and its handler in, the handler to serve out)."""

    def __init__(self, server: grpc.aio.Server, wrap: Callable[[str, Handler], Handler]) -> None:
        self._server = server
        self._wrap = wrap

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self._server.add_generic_rpc_handlers(
            [_WrappedGenericHandler(handler, self._wrap) for handler in handlers]
        )

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Handler]) -> None:
        self._server.add_registered_method_handlers(
            service,
            {name: self._wrap(f"/{service}/{name}", handler) for name, handler in handlers.items()},
        )


# What registers handlers checks that it was given an asyncio server (reflection then
# serves its asyncio servicer): this is one, for that purpose.
grpc.aio.Server.register(GuardedRegistration)


class _WrappedGenericHandler(grpc.GenericRpcHandler):
    """A generic handler whose method handlers are wrapped, each once, when first found."""

    def __init__(self, handler: grpc.GenericRpcHandler, wrap: Callable[[str, Handler], Handler]):
        self._handler = handler
        self._wrap = wrap
        self._wrapped: dict[str, Handler] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Handler | None:
        method = handler_call_details.method
        wrapped = self._wrapped.get(method)
        if wrapped is None:
            # Only methods it has are remembered: callers choose the names asked for.
            handler = self._handler.service(handler_call_details)
            if handler is None:
                return None
            wrapped = self._wrapped[method] = self._wrap(method, handler)
        return wrapped


class Drain:
    """Counts the calls in flight and, once draining, refuses new ones with
    UNAVAILABLE and a RetryInfo (health checks still answer: NOT_SERVING). Server
    streams (EventService.StreamEvents) would never end by themselves: the drain ends
    them at once, UNAVAILABLE, telling the caller to resume from its last cursor.
    It wraps each method's handler as it is registered (`wrap`)."""

    def __init__(self) -> None:
        self.draining = False
        self.in_flight = 0
        self._last_arrival = 0.0
        self._idle = asyncio.Event()
        self._idle.set()
        self._draining = asyncio.Event()

    def wrap(self, method: str, handler: Handler) -> Handler:
        """`handler`, counted, and refused while draining; health's probes are
        answered while draining (NOT_SERVING)."""
        probe = method.startswith("/grpc.health.")
        serialized = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._counted(handler.unary_unary, refused=not probe), **serialized
            )
        if handler.unary_stream is not None and method.startswith("/commerce."):
            return grpc.unary_stream_rpc_method_handler(
                self._ended_by_drain(handler.unary_stream), **serialized
            )
        if handler.stream_stream is not None and not probe:  # reflection's: ends on its own
            return grpc.stream_stream_rpc_method_handler(
                self._refused_or_streamed(_aio(handler.stream_stream)), **serialized
            )
        return handler

    def _arrived(self) -> None:
        self._last_arrival = asyncio.get_running_loop().time()

    def _enter(self) -> None:
        self.in_flight += 1
        self._idle.clear()

    def _leave(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self._idle.set()

    def _counted(
        self, behavior: Callable[..., Awaitable[Any]], *, refused: bool
    ) -> Callable[..., Awaitable[Any]]:
        """`behavior` counted in flight; with `refused`, refused while draining (and
        its arrival keeps the drain from ending for a quiet moment)."""

        async def counted(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            if refused:
                self._arrived()
                if self.draining:
                    await self._refuse(request, context)
            self._enter()
            try:
                return await behavior(request, context)
            finally:
                self._leave()

        return counted

    def _ended_by_drain(self, behavior: Callable[..., Any]) -> Callable[..., Awaitable[None]]:
        async def ended(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
            self._arrived()
            if self.draining:
                await self._refuse(request, context)
            self._enter()
            try:
                stream = asyncio.ensure_future(write_stream(behavior(request, context), context))
                drained = asyncio.ensure_future(self._draining.wait())
                try:
                    await asyncio.wait({stream, drained}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    drained.cancel()
                    if not stream.done():
                        stream.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await stream
                    elif not stream.cancelled():
                        stream.result()  # its own end: OK, or the status it aborted with
                if not stream.cancelled():
                    return
            finally:
                self._leave()
            status = retry_status(
                grpc.StatusCode.UNAVAILABLE,
                "the server is shutting down: call again, from the cursor of the last "
                "event received",
                reason="SHUTTING_DOWN",
                retry_after=DRAINING_RETRY_AFTER,
            )
            await context.abort(status.code, status.details, status.trailing_metadata)

        return ended

    def _refused_or_streamed(
        self, behavior: Callable[..., AsyncIterator[Any]]
    ) -> Callable[..., AsyncIterator[Any]]:
        """A stream that is not the API's (reflection): refused while draining, else
        left to end on its own."""

        async def streamed(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            self._arrived()
            if self.draining:
                await self._refuse(request, context)
            async for message in behavior(request, context):
                yield message

        return streamed

    @staticmethod
    async def _refuse(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        status = retry_status(
            grpc.StatusCode.UNAVAILABLE,
            "the server is shutting down; try again",
            reason="SHUTTING_DOWN",
            retry_after=DRAINING_RETRY_AFTER,
        )
        await context.abort(status.code, status.details, status.trailing_metadata)

    async def drain(self, grace: float) -> None:
        """Refuses new calls from now on; returns when none is in flight and none
        arrived for QUIET_SECONDS, or after `grace` seconds."""
        self.draining = True
        self._draining.set()
        loop = asyncio.get_running_loop()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                while True:
                    await self._idle.wait()
                    quiet_since = loop.time() - self._last_arrival
                    if quiet_since >= QUIET_SECONDS and self._idle.is_set():
                        return
                    await asyncio.sleep(QUIET_SECONDS - min(quiet_since, QUIET_SECONDS) + 0.01)
