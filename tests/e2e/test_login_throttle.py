"""Brute-force protection of AuthenticateCustomer: failed logins are counted per
(store, email) and per (store, caller) in the database; past the limit, attempts are
RESOURCE_EXHAUSTED with a RetryInfo until the window passes, for unknown emails
exactly as for known ones, in every process that shares the database."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
from commerce.customers.v1 import customer_service_pb2_grpc

from services.core.settings import Settings
from tests.conftest import new_store
from tests.e2e.helpers import PASSWORD, create_customer, pb, serving, unique_email
from tests.e2e.test_callers import bearer, new_caller
from tests.errors import RpcFailure, parse

Code = grpc.StatusCode
DEFAULT_PER_EMAIL = Settings.model_fields["login_failures_per_email"].default
DEFAULT_WINDOW = Settings.model_fields["login_window_seconds"].default


def login(store_id: int, email: str, password: str) -> pb.AuthenticateCustomerRequest:
    return pb.AuthenticateCustomerRequest(store_id=store_id, email=email, password=password)


async def attempt(
    stub: customer_service_pb2_grpc.CustomerServiceStub,
    request: pb.AuthenticateCustomerRequest,
    metadata: list[tuple[str, str]] | None = None,
) -> RpcFailure | None:
    """None when the login succeeds, else how it failed."""
    try:
        await stub.AuthenticateCustomer(request, metadata=metadata)
    except grpc.aio.AioRpcError as error:
        return parse(error)
    return None


def codes(failures: list[RpcFailure | None]) -> list[str]:
    return ["OK" if failure is None else failure.code.name for failure in failures]


def assert_throttled(failure: RpcFailure | None, window: float) -> None:
    assert failure is not None
    assert failure.code == Code.RESOURCE_EXHAUSTED
    assert failure.error_info.reason == "TOO_MANY_LOGIN_ATTEMPTS"
    assert failure.message == "too many failed logins; try again later"
    delay = failure.retry_info.retry_delay.ToTimedelta().total_seconds()
    assert 0 < delay <= window


async def test_forty_wrong_passwords_end_throttled_on_known_and_unknown_emails(customers, store_id):
    known = await create_customer(customers, store_id, email=unique_email(), password=PASSWORD)
    by_email = {}
    for email in (known.email, unique_email("nobody")):
        by_email[email] = [
            await attempt(customers, login(store_id, email, f"guess {number}"))
            for number in range(40)
        ]
    # Nothing tells a known account from an unknown email: the same statuses in the
    # same order, the same messages.
    known_codes, unknown_codes = (codes(failures) for failures in by_email.values())
    assert known_codes == unknown_codes
    assert known_codes == ["UNAUTHENTICATED"] * DEFAULT_PER_EMAIL + ["RESOURCE_EXHAUSTED"] * (
        40 - DEFAULT_PER_EMAIL
    )
    for failures in by_email.values():
        assert_throttled(failures[-1], DEFAULT_WINDOW)
    # While throttled, even the right password is refused.
    assert_throttled(
        await attempt(customers, login(store_id, known.email, PASSWORD)), DEFAULT_WINDOW
    )


async def wait_until_accepted(
    stub: customer_service_pb2_grpc.CustomerServiceStub,
    request: pb.AuthenticateCustomerRequest,
    *,
    within: float = 30.0,
) -> list[RpcFailure]:
    """Tries the login until it succeeds; the refusals seen before. Fails the test
    when it is still refused after `within` seconds."""
    refusals: list[RpcFailure] = []
    give_up = time.monotonic() + within
    while (failure := await attempt(stub, request)) is not None:
        refusals.append(failure)
        assert time.monotonic() < give_up, f"still refused: {failure.code} {failure.message}"
        await asyncio.sleep(0.05)
    return refusals


async def test_the_right_password_works_again_once_the_window_passed(settings, sessions):
    window = 1.0
    short = settings.model_copy(
        update={"login_failures_per_email": 3, "login_window_seconds": window}
    )
    async with serving(short) as (_, channel):
        stub = customer_service_pb2_grpc.CustomerServiceStub(channel)
        store_id = await new_store(sessions)
        customer = await create_customer(stub, store_id, email=unique_email(), password=PASSWORD)
        for number in range(3):
            failure = await attempt(stub, login(store_id, customer.email, f"guess {number}"))
            assert codes([failure]) == ["UNAUTHENTICATED"]
        refusals = await wait_until_accepted(stub, login(store_id, customer.email, PASSWORD))
        assert refusals, "the right password was accepted while throttled"
        for refusal in refusals:
            assert_throttled(refusal, window)


async def test_a_success_resets_the_count_of_the_email(customers, store_id):
    customer = await create_customer(customers, store_id, email=unique_email(), password=PASSWORD)
    for _ in range(3):
        for number in range(DEFAULT_PER_EMAIL - 1):
            failure = await attempt(customers, login(store_id, customer.email, f"guess {number}"))
            assert codes([failure]) == ["UNAUTHENTICATED"]
        assert await attempt(customers, login(store_id, customer.email, PASSWORD)) is None


async def test_servers_sharing_a_database_share_the_count(settings, customers, store_id):
    customer = await create_customer(customers, store_id, email=unique_email(), password=PASSWORD)
    async with serving(settings) as (_, first), serving(settings) as (_, second):
        stubs = [customer_service_pb2_grpc.CustomerServiceStub(c) for c in (first, second)]
        failures = [
            await attempt(stubs[number % 2], login(store_id, customer.email, f"guess {number}"))
            for number in range(DEFAULT_PER_EMAIL)
        ]
        assert codes(failures) == ["UNAUTHENTICATED"] * DEFAULT_PER_EMAIL
        for stub in stubs:
            assert_throttled(
                await attempt(stub, login(store_id, customer.email, PASSWORD)), DEFAULT_WINDOW
            )


async def test_one_stores_throttle_leaves_another_store_alone(customers, store_id, other_store_id):
    email = unique_email()
    for store in (store_id, other_store_id):
        await create_customer(customers, store, email=email, password=PASSWORD)
    for number in range(DEFAULT_PER_EMAIL):
        await attempt(customers, login(store_id, email, f"guess {number}"))
    assert_throttled(await attempt(customers, login(store_id, email, PASSWORD)), DEFAULT_WINDOW)
    assert await attempt(customers, login(other_store_id, email, PASSWORD)) is None


async def test_one_caller_guessing_many_emails_is_throttled(settings, sessions, tmp_path: Path):
    """Per caller: by its token's name when it has one (two tokens from one address
    count apart), else by its address."""
    guesser, guesser_line = new_caller("guesser")
    shop, shop_line = new_caller("shop")
    callers = tmp_path / "callers"
    callers.write_text(f"{guesser_line}\n{shop_line}\n")
    limits = {"login_failures_per_email": 100, "login_failures_per_caller": 4}
    with_tokens = settings.model_copy(update=limits | {"caller_tokens_file": str(callers)})
    without_tokens = settings.model_copy(update=limits)
    async with serving(with_tokens) as (_, guarded), serving(without_tokens) as (_, open_):
        for channel, guessing, other in (
            (guarded, bearer(guesser), bearer(shop)),
            (open_, None, None),
        ):
            stub = customer_service_pb2_grpc.CustomerServiceStub(channel)
            store_id = await new_store(sessions)
            failures = [
                await attempt(stub, login(store_id, unique_email(), "guess"), guessing)
                for _ in range(6)
            ]
            assert codes(failures) == ["UNAUTHENTICATED"] * 4 + ["RESOURCE_EXHAUSTED"] * 2
            assert_throttled(failures[-1], DEFAULT_WINDOW)
            if other is not None:
                failure = await attempt(stub, login(store_id, unique_email(), "guess"), other)
                assert codes([failure]) == ["UNAUTHENTICATED"]
