"""Caller authentication with per-caller tokens: a caller without a valid token gets
UNAUTHENTICATED and no data, on every service, reflection included; health stays
open for probes; `commerce callers new` makes tokens that work."""

from __future__ import annotations

import re
from pathlib import Path

import grpc
import pytest
from commerce.customers.v1 import customer_service_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from services.core.rpc.callers import load_callers, token_digest
from tests.e2e.helpers import create_customer, pb, serving
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
