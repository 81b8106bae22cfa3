"""A login storm against a real server: how much is shed at once, and what the
storm does to a cheap RPC.

Starts `commerce serve` (production bcrypt cost 12 unless --bcrypt-rounds) on a
throwaway PostgreSQL database, measures GetCustomer latency idle, then sends
--logins concurrent AuthenticateCustomer calls with a --deadline while another
process keeps reading a customer, and prints one JSON object: the logins' statuses,
the median time to a RESOURCE_EXHAUSTED, and GetCustomer's p50/p99 idle and during.

    .venv/bin/python -m bench.login_storm --database-url postgresql://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import statistics
import sys
import time
import uuid
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import grpc
from commerce.customers.v1 import customer_service_pb2 as pb
from commerce.customers.v1 import customer_service_pb2_grpc

from bench.throwaway import commerce_server

PASSWORD = "correct horse battery"  # noqa: S105 - a benchmark customer's


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def timed(call: Any) -> tuple[str, float]:  # the stubs type calls as responses
    began = time.perf_counter()
    try:
        await call
        code = "OK"
    except grpc.aio.AioRpcError as error:
        code = error.code().name
    return code, time.perf_counter() - began


def reads_for(target: str, request: bytes, seconds: float) -> tuple[list[float], dict[str, int]]:
    """GetCustomer, one call after the other for `seconds`: (latencies, codes). Run in a
    process of its own, so the storm's client does not delay it."""
    latencies, codes = list[float](), Counter[str]()
    with grpc.insecure_channel(target) as channel:
        stub = customer_service_pb2_grpc.CustomerServiceStub(channel)
        get = pb.GetCustomerRequest.FromString(request)
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            began = time.perf_counter()
            try:
                stub.GetCustomer(get, timeout=10)
                codes["OK"] += 1
            except grpc.RpcError as error:
                codes[error.code().name] += 1
            latencies.append(time.perf_counter() - began)
            time.sleep(0.002)
    return latencies, dict(codes)


async def storm(target: str, store_id: int, logins: int, deadline: float) -> dict[str, object]:
    loop = asyncio.get_running_loop()
    reader = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    async with grpc.aio.insecure_channel(target) as channel:
        stub = customer_service_pb2_grpc.CustomerServiceStub(channel)
        email = f"storm.{uuid.uuid4().hex[:8]}@example.com"
        created = await stub.CreateCustomer(
            pb.CreateCustomerRequest(store_id=store_id, email=email, password=PASSWORD)
        )
        get = pb.GetCustomerRequest(store_id=store_id, customer_id=created.customer.customer_id)
        login = pb.AuthenticateCustomerRequest(store_id=store_id, email=email, password=PASSWORD)
        body = get.SerializeToString()
        await loop.run_in_executor(reader, reads_for, target, body, 1.0)  # warm up
        idle, _ = await loop.run_in_executor(reader, reads_for, target, body, 3.0)

        reading = loop.run_in_executor(reader, reads_for, target, body, 3.0)
        began = time.perf_counter()
        results = await asyncio.gather(
            *(timed(stub.AuthenticateCustomer(login, timeout=deadline)) for _ in range(logins))
        )
        storm_seconds = time.perf_counter() - began
        during, read_codes = await reading
    reader.shutdown()

    codes = Counter(code for code, _ in results)
    refusals = [took for code, took in results if code == "RESOURCE_EXHAUSTED"]
    return {
        "logins": logins,
        "deadline_s": deadline,
        "storm_s": round(storm_seconds, 2),
        "login_codes": dict(codes),
        "refused_share": round(len(refusals) / logins, 3),
        "refusal_median_ms": round(statistics.median(refusals) * 1000, 1) if refusals else None,
        "get_customer_idle_ms": {
            "p50": round(percentile(idle, 0.5) * 1000, 2),
            "p99": round(percentile(idle, 0.99) * 1000, 2),
            "calls": len(idle),
        },
        "get_customer_during_ms": {
            "p50": round(percentile(during, 0.5) * 1000, 2),
            "p99": round(percentile(during, 0.99) * 1000, 2),
            "calls": len(during),
            "codes": dict(read_codes),
        },
    }


async def run(arguments: argparse.Namespace) -> dict[str, object]:
    async with commerce_server(arguments.database_url, bcrypt_rounds=arguments.bcrypt_rounds) as (
        target,
        _,
    ):
        return await storm(target, 1, arguments.logins, arguments.deadline)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", required=True, help="a PostgreSQL server's URL")
    parser.add_argument("--logins", type=int, default=600)
    parser.add_argument("--deadline", type=float, default=3.0, help="seconds")
    parser.add_argument("--bcrypt-rounds", type=int, default=12)
    result = asyncio.run(run(parser.parse_args()))
    json.dump(result, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
