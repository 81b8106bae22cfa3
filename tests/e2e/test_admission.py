"""Overload is shed, not queued: a storm of logins the password threads cannot serve
within the callers' deadline is refused at once with RESOURCE_EXHAUSTED and RetryInfo
(not left to time out), and cheap calls made during the storm are served."""

from __future__ import annotations

import asyncio
from collections import Counter

import grpc
from commerce.customers.v1 import customer_service_pb2_grpc

from tests.e2e.helpers import PASSWORD, create_customer, pb, serving
from tests.errors import parse

Code = grpc.StatusCode
STORM = 60


async def outcome(call: grpc.aio.UnaryUnaryCall) -> str:
    """The call's status code, RESOURCE_EXHAUSTED only when it carries RetryInfo."""
    try:
        await call
    except grpc.aio.AioRpcError as error:
        failure = parse(error)
        if failure.code == Code.RESOURCE_EXHAUSTED and failure.retry_info is not None:
            return "RESOURCE_EXHAUSTED+RetryInfo"
        return failure.code.name
    return "OK"


async def test_a_login_storm_is_refused_early_and_reads_keep_working(settings, store_id):
    # One password thread at a cost of about a tenth of a second: sixty logins
    # cannot all be checked within a one-second deadline.
    slow = settings.model_copy(update={"bcrypt_rounds": 11, "password_hash_workers": 1})
    async with serving(slow) as (_, channel):
        stub = customer_service_pb2_grpc.CustomerServiceStub(channel)
        ann = await create_customer(stub, store_id, password=PASSWORD)
        login = pb.AuthenticateCustomerRequest(
            store_id=store_id, email=ann.email, password=PASSWORD
        )
        get = pb.GetCustomerRequest(store_id=store_id, customer_id=ann.customer_id)

        logins = [outcome(stub.AuthenticateCustomer(login, timeout=1.0)) for _ in range(STORM)]
        reads = [outcome(stub.GetCustomer(get, timeout=60)) for _ in range(20)]
        results = await asyncio.gather(*logins, *reads)

    storm, during = Counter(results[:STORM]), Counter(results[STORM:])
    assert during == {"OK": 20}
    assert set(storm) <= {"OK", "RESOURCE_EXHAUSTED+RetryInfo", "DEADLINE_EXCEEDED"}, storm
    assert storm["RESOURCE_EXHAUSTED+RetryInfo"] > STORM / 2, storm
    assert storm["DEADLINE_EXCEEDED"] < storm["RESOURCE_EXHAUSTED+RetryInfo"] / 4, storm
