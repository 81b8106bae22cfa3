"""The server around the modules: health, reflection, mounting, error mapping."""

from __future__ import annotations

import asyncio
import socket

import grpc
import pytest
from commerce.customers.v1 import customer_service_pb2_grpc
from commerce.orders.v1 import order_service_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from services.core.rpc.interceptor import RpcInterceptor
from services.core.settings import Settings
from services.server import Application
from tests.e2e.helpers import create_customer, create_order, pb, serving
from tests.errors import rpc_error
from tests.process import free_port

CUSTOMER_SERVICE = "commerce.customers.v1.CustomerService"
ORDER_SERVICES = ("commerce.orders.v1.OrderService", "commerce.orders.v1.CustomerOrderService")
LOYALTY_SERVICE = "commerce.loyalty.v1.CustomerLoyaltyService"
EVENT_SERVICE = "commerce.events.v1.EventService"


async def test_health_reports_serving_overall_and_per_service(channel):
    stub = health_pb2_grpc.HealthStub(channel)
    for service in ("", CUSTOMER_SERVICE):
        response = await stub.Check(health_pb2.HealthCheckRequest(service=service))
        assert response.status == health_pb2.HealthCheckResponse.SERVING
    await rpc_error(
        stub.Check(health_pb2.HealthCheckRequest(service="commerce.nope.v1.Nothing")),
        grpc.StatusCode.NOT_FOUND,
    )


async def test_health_is_settled_before_the_port_answers(settings):
    """A database that accepts connections but never answers keeps the start-up probe
    waiting for the whole connect timeout. A health check that reaches the server in
    that time must already get NOT_SERVING, overall and per service: never a default
    SERVING nor NOT_FOUND for a service the server is about to report."""
    with socket.socket() as silent_database:
        silent_database.bind(("127.0.0.1", 0))
        silent_database.listen()
        silent_port = silent_database.getsockname()[1]
        url = f"postgresql+asyncpg://postgres@127.0.0.1:{silent_port}/test"
        port = free_port()
        app = Application(
            settings.model_copy(update={"database_url": url, "db_connect_timeout": 2.0}),
            ["customers"],
        )
        starting = asyncio.create_task(app.start(f"127.0.0.1:{port}"))
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                health = health_pb2_grpc.HealthStub(channel)
                first = await health.Check(health_pb2.HealthCheckRequest(), wait_for_ready=True)
                per_service = await health.Check(
                    health_pb2.HealthCheckRequest(service=CUSTOMER_SERVICE)
                )
            assert first.status == health_pb2.HealthCheckResponse.NOT_SERVING
            assert per_service.status == health_pb2.HealthCheckResponse.NOT_SERVING
        finally:
            await starting
            await app.stop(grace=0)


async def test_a_busy_database_stays_serving(settings):
    """Calls holding every pooled connection (SQLite's only one) for longer than the
    connect timeout: the database is busy, not gone, and health must keep saying so."""
    quick = settings.model_copy(update={"health_check_interval": 0.1, "db_connect_timeout": 0.3})
    async with serving(quick, ["customers"]) as (app, channel):
        health = health_pb2_grpc.HealthStub(channel)
        held = [await app.engine.connect() for _ in range(app.engine.pool.size())]  # type: ignore[attr-defined]
        try:
            for _ in range(15):  # 1.5 s: several probes, each past its timeout
                response = await health.Check(health_pb2.HealthCheckRequest())
                assert response.status == health_pb2.HealthCheckResponse.SERVING
                await asyncio.sleep(0.1)
        finally:
            for connection in held:
                await connection.close()


async def listed_services(channel: grpc.aio.Channel) -> set[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    async for response in stub.ServerReflectionInfo(iter([request])):
        return {service.name for service in response.list_services_response.service}
    raise AssertionError("no reflection response")


async def test_reflection_lists_exactly_the_mounted_services(channel):
    assert await listed_services(channel) == {
        CUSTOMER_SERVICE,
        *ORDER_SERVICES,
        LOYALTY_SERVICE,
        EVENT_SERVICE,
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    }


@pytest.mark.parametrize(
    ("modules", "services"),
    [
        (["customers"], {CUSTOMER_SERVICE}),
        (["orders"], set(ORDER_SERVICES)),
        (["loyalty"], {LOYALTY_SERVICE}),
        (["events"], {EVENT_SERVICE}),
        (["orders", "customers"], {CUSTOMER_SERVICE, *ORDER_SERVICES}),
    ],
)
async def test_each_module_mounts_on_its_own(settings, customers, store_id, modules, services):
    """Orders and loyalty work without the customers servicer (they need customers'
    tables, not its RPCs), customers works without them, and each server lists and
    serves exactly what it mounted."""
    customer = await create_customer(customers, store_id)  # through the full server
    async with serving(settings, modules) as (app, channel):
        assert await listed_services(channel) == {
            *services,
            "grpc.health.v1.Health",
            "grpc.reflection.v1alpha.ServerReflection",
        }
        health = health_pb2_grpc.HealthStub(channel)
        for service in services:
            response = await health.Check(health_pb2.HealthCheckRequest(service=service))
            assert response.status == health_pb2.HealthCheckResponse.SERVING

        customer_call = customer_service_pb2_grpc.CustomerServiceStub(channel).GetCustomer(
            pb.GetCustomerRequest(store_id=store_id, customer_id=customer.customer_id)
        )
        order_call = create_order(
            order_service_pb2_grpc.OrderServiceStub(channel), store_id, customer.customer_id
        )
        if CUSTOMER_SERVICE in services:
            assert (await customer_call).customer == customer
        else:
            await rpc_error(customer_call, grpc.StatusCode.UNIMPLEMENTED)
        if "commerce.orders.v1.OrderService" in services:
            assert (await order_call).customer == customer
        else:
            await rpc_error(order_call, grpc.StatusCode.UNIMPLEMENTED)
        # A consumer contributes customer metrics only when it is mounted.
        consumers = [module for module in modules if module in ("orders", "loyalty")]
        assert list(app.customer_metrics.sources) == consumers


async def test_health_turns_not_serving_at_shutdown(settings):
    app = Application(settings, ["customers"])
    await app.start("127.0.0.1:0")
    try:
        await app.health.enter_graceful_shutdown()
        response = await app.health.Check(
            health_pb2.HealthCheckRequest(service=CUSTOMER_SERVICE), None
        )
        assert response.status == health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        await app.stop(grace=0)


def test_unknown_module_is_refused(settings):
    with pytest.raises(ValueError, match="unknown module"):
        Application(settings, ["customers", "warehouse"])


async def test_lost_database_is_unavailable_not_unknown():
    # Nothing listens on port 1: every database call fails to connect.
    settings = Settings(database_url="postgresql://postgres@127.0.0.1:1/none", bcrypt_rounds=4)
    async with serving(settings) as (_, channel):
        stub = customer_service_pb2_grpc.CustomerServiceStub(channel)
        failure = await rpc_error(
            stub.GetCustomer(pb.GetCustomerRequest(store_id=1, customer_id=1)),
            grpc.StatusCode.UNAVAILABLE,
        )
        assert "127.0.0.1" not in failure.message


async def test_a_bug_is_internal_without_detail(caplog):
    """Any exception that is not a domain error reaches the caller as INTERNAL with a
    fixed message, never as UNKNOWN with the exception's text; the log has the trace."""

    async def broken(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        raise RuntimeError("secret internals: password=hunter2")

    handler = grpc.method_handlers_generic_handler(
        "commerce.test.v1.Broken", {"Call": grpc.unary_unary_rpc_method_handler(broken)}
    )
    server = grpc.aio.server(interceptors=[RpcInterceptor()])
    server.add_generic_rpc_handlers([handler])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary("/commerce.test.v1.Broken/Call")(b"")
            failure = await rpc_error(call, grpc.StatusCode.INTERNAL)
        assert failure.message == "internal error"
        assert "RuntimeError: secret internals" in caplog.text
    finally:
        await server.stop(0)


async def test_while_draining_every_call_but_health_is_refused_with_a_retry(settings):
    """Once the drain began, a unary call and reflection's stream are refused with
    UNAVAILABLE, SHUTTING_DOWN and a RetryInfo, before any servicer runs; health
    still answers (load balancers read NOT_SERVING there)."""
    async with serving(settings, ["customers"]) as (app, channel):
        drain = asyncio.create_task(app.drain.drain(grace=60))
        try:
            customers = customer_service_pb2_grpc.CustomerServiceStub(channel)
            refused = await rpc_error(
                customers.GetCustomer(pb.GetCustomerRequest(store_id=1, customer_id=1)),
                grpc.StatusCode.UNAVAILABLE,
            )
            reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
            listing = reflection.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")])
            )

            async def read_all() -> None:
                async for _ in listing:
                    pass

            streamed = await rpc_error(read_all(), grpc.StatusCode.UNAVAILABLE)
            for failure in (refused, streamed):
                assert failure.error_info is not None
                assert failure.error_info.reason == "SHUTTING_DOWN"
                assert failure.retry_info is not None
            health = health_pb2_grpc.HealthStub(channel)
            answer = await health.Check(health_pb2.HealthCheckRequest())
            # The drain alone changes no status; stopping reports NOT_SERVING.
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
        finally:
            drain.cancel()
