"""Caller authentication with per-caller tokens: a caller without a valid token gets
UNAUTHENTICATED and no data, on every service, reflection included; health stays
open for probes; `commerce callers new` makes tokens that work."""

from __future__ import annotations

import re
from pathlib import Path

import grpc
import pytest
from commerce.customers.v1 import customer_pb2, customer_service_pb2_grpc
from commerce.orders.v1 import (
    customer_order_service_pb2,
    customer_order_service_pb2_grpc,
    order_service_pb2,
    order_service_pb2_grpc,
)
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from services.core.rpc.callers import load_callers, method_access, module_of, token_digest
from services.server import MODULES
from tests.e2e.helpers import create_customer, line, pb, serving, unique_email
from tests.errors import rpc_error
from tests.process import clean_environment, commerce

Code = grpc.StatusCode


def new_caller(name: str) -> tuple[str, str]:
    """(token, callers-file line) as `commerce callers new` prints them."""
    output = commerce("callers", "new", name, env=clean_environment()).stdout
    token = re.search(r"shown once\): (\S+)", output)[1]
    line = re.search(r"callers file: (.+)", output)[1]
    return token, line


@pytest.fixture
async def guarded(settings, tmp_path: Path):
    """A server that needs caller tokens, and a token of each of two callers."""
    billing, billing_line = new_caller("billing")
    support, support_line = new_caller("support")
    callers = tmp_path / "callers"
    callers.write_text(f"# who may call\n{billing_line}\n\n{support_line}  # the help desk\n")
    async with serving(settings.model_copy(update={"caller_tokens_file": str(callers)})) as (
        _,
        channel,
    ):
        yield channel, billing, support


def bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


async def test_calls_need_a_known_token(guarded, customers, store_id):
    channel, billing, support = guarded
    ann = await create_customer(customers, store_id)  # through the open test server
    stub = customer_service_pb2_grpc.CustomerServiceStub(channel)
    get = pb.GetCustomerRequest(store_id=store_id, customer_id=ann.customer_id)

    for metadata in (
        None,
        bearer(billing + "x"),
        bearer(token_digest(billing)),  # the stored hash is not a token
        [("authorization", billing)],  # no scheme
        [("authorization", "Basic " + billing)],
    ):
        failure = await rpc_error(stub.GetCustomer(get, metadata=metadata), Code.UNAUTHENTICATED)
        assert failure.error_info.reason == "CALLER_UNAUTHENTICATED"
        assert billing not in failure.message

    for token in (billing, support):
        answer = await stub.GetCustomer(get, metadata=bearer(token))
        assert answer.customer == ann


async def test_a_refused_call_reaches_no_servicer(guarded, customers, store_id):
    channel, _, _ = guarded
    stub = customer_service_pb2_grpc.CustomerServiceStub(channel)
    email = "nobody-creates-me@example.com"
    await rpc_error(
        stub.CreateCustomer(pb.CreateCustomerRequest(store_id=store_id, email=email)),
        Code.UNAUTHENTICATED,
    )
    listing = await customers.ListCustomers(pb.ListCustomersRequest(store_id=store_id))
    assert email not in [customer.email for customer in listing.customers]


async def test_health_is_open_and_reflection_is_not(guarded):
    channel, billing, _ = guarded
    health = health_pb2_grpc.HealthStub(channel)
    answer = await health.Check(health_pb2.HealthCheckRequest(service=""))
    assert answer.status == health_pb2.HealthCheckResponse.SERVING

    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")

    async def listed(metadata) -> set[str]:
        async for response in reflection.ServerReflectionInfo(iter([request]), metadata=metadata):
            return {service.name for service in response.list_services_response.service}
        raise AssertionError("no reflection response")

    await rpc_error(listed(None), Code.UNAUTHENTICATED)
    assert "commerce.customers.v1.CustomerService" in await listed(bearer(billing))


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("billing 1234\n", "line 1"),
        ("ok " + "a" * 64 + "\nbad line here\n", "line 2"),
        ("# nobody\n", "names no caller"),
    ],
)
def test_a_bad_callers_file_is_refused_at_start(tmp_path, text, problem):
    callers = tmp_path / "callers"
    callers.write_text(text)
    with pytest.raises(ValueError, match=problem):
        load_callers(str(callers))
    result = commerce(
        "serve",
        "--caller-tokens-file",
        str(callers),
        env=clean_environment(DATABASE_URL=f"sqlite:///{tmp_path / 'x.db'}"),
        check=False,
    )
    assert result.returncode == 2
    assert problem in result.stderr
    assert "Traceback" not in result.stderr


# -- scopes ----------------------------------------------------------------------------------


def new_scoped_caller(name: str, *scopes: str) -> tuple[str, str]:
    """(token, callers-file line) of `commerce callers new NAME --scope ...`."""
    flags = [argument for scope in scopes for argument in ("--scope", scope)]
    output = commerce("callers", "new", name, *flags, env=clean_environment()).stdout
    token = re.search(r"shown once\): (\S+)", output)[1]
    line = re.search(r"callers file: (.+)", output)[1]
    return token, line


@pytest.fixture(scope="module")
def scoped_callers(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A callers file whose callers have scopes, and {name: token}."""
    made = {
        "reporter": new_scoped_caller("reporter", "customers:read", "orders:read"),
        "crm": new_scoped_caller("crm", "customers:write"),
        "auditor": new_scoped_caller("auditor", "*:read"),
        "legacy": new_caller("legacy"),  # a line without scopes, as before scopes existed
    }
    callers = tmp_path_factory.mktemp("scoped") / "callers"
    callers.write_text("".join(f"{line}\n" for _, line in made.values()))
    return callers, {name: token for name, (token, _) in made.items()}


@pytest.fixture
async def scoped(settings, scoped_callers):
    """A server of those callers: the channel, and {name: token}."""
    callers, tokens = scoped_callers
    async with serving(settings.model_copy(update={"caller_tokens_file": str(callers)})) as (
        _,
        channel,
    ):
        yield channel, tokens


def test_callers_new_writes_the_scopes_into_the_line():
    _, line = new_scoped_caller("reporter", "orders:read", "customers:read,orders:read")
    name, digest, scopes = line.split()
    assert (name, len(digest), scopes) == ("reporter", 64, "customers:read,orders:read")
    _, unscoped = new_caller("everything")
    assert len(unscoped.split()) == 2  # no scopes: full access

    result = commerce(
        "callers", "new", "x", "--scope", "customers:delete", env=clean_environment(), check=False
    )
    assert result.returncode == 2
    assert "customers:delete" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_bad_scope_in_the_callers_file_names_its_line(tmp_path):
    callers = tmp_path / "callers"
    callers.write_text(f"ok {'a' * 64}\nreporter {'b' * 64} customers:read,Orders\n")
    with pytest.raises(ValueError, match=r"line 2: bad scope 'Orders'"):
        load_callers(str(callers))


async def test_a_read_only_caller_reads_but_cannot_write(scoped, customers, store_id):
    channel, tokens = scoped
    ann = await create_customer(customers, store_id)
    stub = customer_service_pb2_grpc.CustomerServiceStub(channel)
    reader = bearer(tokens["reporter"])
    get = pb.GetCustomerRequest(store_id=store_id, customer_id=ann.customer_id)
    assert (await stub.GetCustomer(get, metadata=reader)).customer == ann
    listing = await stub.ListCustomers(pb.ListCustomersRequest(store_id=store_id), metadata=reader)
    assert [customer.customer_id for customer in listing.customers] == [ann.customer_id]

    email = "reader-creates-nothing@example.com"
    for call in (
        stub.CreateCustomer(
            pb.CreateCustomerRequest(store_id=store_id, email=email), metadata=reader
        ),
        stub.UpdateCustomer(
            pb.UpdateCustomerRequest(
                store_id=store_id,
                customer_id=ann.customer_id,
                customer=customer_pb2.Customer(first_name="Mallory"),
                update_mask={"paths": ["first_name"]},
            ),
            metadata=reader,
        ),
    ):
        failure = await rpc_error(call, Code.PERMISSION_DENIED)
        assert failure.error_info.reason == "CALLER_PERMISSION_DENIED"
        assert failure.error_info.metadata["needed_scope"] == "customers:write"
    assert (await customers.GetCustomer(get)).customer == ann
    listing = await customers.ListCustomers(pb.ListCustomersRequest(store_id=store_id))
    assert email not in [customer.email for customer in listing.customers]


async def test_a_caller_scoped_to_customers_cannot_call_orders(scoped, customers, store_id):
    channel, tokens = scoped
    crm = bearer(tokens["crm"])
    created = await customer_service_pb2_grpc.CustomerServiceStub(channel).CreateCustomer(
        pb.CreateCustomerRequest(store_id=store_id, email=unique_email("crm")), metadata=crm
    )
    orders = order_service_pb2_grpc.OrderServiceStub(channel)
    history = customer_order_service_pb2_grpc.CustomerOrderServiceStub(channel)
    for call in (
        orders.GetOrder(
            order_service_pb2.GetOrderRequest(store_id=store_id, order_id=1), metadata=crm
        ),
        orders.CreateOrder(
            order_service_pb2.CreateOrderRequest(store_id=store_id, customer_id=1), metadata=crm
        ),
        history.GetCustomerOrderCount(
            customer_order_service_pb2.GetCustomerOrderCountRequest(
                store_id=store_id, customer_id=created.customer.customer_id
            ),
            metadata=crm,
        ),
    ):
        failure = await rpc_error(call, Code.PERMISSION_DENIED)
        assert failure.error_info.metadata["needed_scope"].startswith("orders:")

    # `*:read` reads every module and writes none; a line without scopes does it all.
    auditor, legacy = bearer(tokens["auditor"]), bearer(tokens["legacy"])
    count = customer_order_service_pb2.GetCustomerOrderCountRequest(
        store_id=store_id, customer_id=created.customer.customer_id
    )
    assert (await history.GetCustomerOrderCount(count, metadata=auditor)).order_count == 0
    new_order = order_service_pb2.CreateOrderRequest(
        store_id=store_id,
        customer_id=created.customer.customer_id,
        currency_code="EUR",
        line_items=[line()],
    )
    await rpc_error(orders.CreateOrder(new_order, metadata=auditor), Code.PERMISSION_DENIED)
    assert (await orders.CreateOrder(new_order, metadata=legacy)).order.order_id


async def test_an_unknown_method_tells_an_unauthenticated_caller_nothing(scoped):
    channel, tokens = scoped
    for method in (
        "/commerce.secrets.v1.Vault/Open",
        "/commerce.customers.v1.CustomerService/Nope",
    ):
        unknown = channel.unary_unary(method)  # raw bytes in and out
        failure = await rpc_error(unknown(b""), Code.UNAUTHENTICATED)
        assert failure.error_info.reason == "CALLER_UNAUTHENTICATED"
        # A known caller may learn that it does not exist.
        await rpc_error(unknown(b"", metadata=bearer(tokens["reporter"])), Code.UNIMPLEMENTED)

    health = health_pb2_grpc.HealthStub(channel)
    answer = await health.Check(health_pb2.HealthCheckRequest(service=""))
    assert answer.status == health_pb2.HealthCheckResponse.SERVING
    # Reflection describes the API to every known caller, whatever its scopes.
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    responses = reflection.ServerReflectionInfo(iter([request]), metadata=bearer(tokens["crm"]))
    response = await anext(aiter(responses))
    listed = {service.name for service in response.list_services_response.service}
    assert "commerce.orders.v1.OrderService" in listed


def test_every_rpc_of_every_mounted_service_is_classified(server):
    """Read or write follows from each RPC's verb: a new RPC with a verb the scopes do
    not know fails here (until then, only full-access callers may call it)."""
    unclassified = []
    rpcs = 0
    for name in server.service_names:  # every module's services: the session server has all
        service = descriptor_pool.Default().FindServiceByName(name)
        for method in service.methods:
            rpcs += 1
            path = f"/{service.full_name}/{method.name}"
            assert module_of(path) in server.module_names  # the scope's module name
            if method_access(path) is None:
                unclassified.append(path)
    assert set(server.module_names) == set(MODULES)
    assert rpcs >= 23
    assert unclassified == []
    assert method_access("/commerce.customers.v1.CustomerService/GetCustomer") == "read"
    assert method_access("/commerce.orders.v1.OrderService/ListOrders") == "read"
    assert method_access("/commerce.customers.v1.CustomerService/ExportCustomers") == "read"
    assert method_access("/commerce.orders.v1.OrderService/UpdateOrderStatus") == "write"
    assert (
        method_access("/commerce.loyalty.v1.CustomerLoyaltyService/RedeemLoyaltyPoints") == "write"
    )
    assert method_access("/commerce.x.v1.S/Frobnicate") is None
