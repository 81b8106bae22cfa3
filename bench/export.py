"""ExportCustomers at scale: `python -m bench.export` seeds a store of 1,000,000
customers on PostgreSQL (bench.seed, reused by later runs), starts `commerce serve`
on it and exports the store through the real server with a Python client reading as
fast as it can: rows per second, and the server's resident memory before the export
and at its peak (VmRSS and VmHWM from /proc). Then a second export whose reader stops
for 10 s after the first message: the server's resident memory across the pause.
Every figure is measured in this run; nothing is asserted.

Usage: python -m bench.export [--database-url URL] [--customers N] [--pause S]"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
from commerce.customers.v1 import customer_service_pb2 as pb
from commerce.customers.v1 import customer_service_pb2_grpc

from bench import servers
from bench.run import Scale, prepared_store

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/commerce_bench_export"


def memory_kb(pid: int) -> dict[str, int]:
    """The process's resident set now (VmRSS) and at its peak so far (VmHWM), in kB."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0])
    return found


async def full_speed(target: str, store_id: int, pid: int) -> dict[str, Any]:
    """One export read as fast as the client can."""
    before = memory_kb(pid)
    rows = messages = 0
    began = time.perf_counter()
    async with grpc.aio.insecure_channel(target) as channel:
        stub = customer_service_pb2_grpc.CustomerServiceStub(channel)
        first_after = 0.0
        async for response in stub.ExportCustomers(pb.ExportCustomersRequest(store_id=store_id)):
            if not messages:
                first_after = time.perf_counter() - began
            messages += 1
            rows += len(response.customers)
    seconds = time.perf_counter() - began
    after = memory_kb(pid)
    return {
        "rows": rows,
        "messages": messages,
        "seconds": round(seconds, 2),
        "rows_per_second": round(rows / seconds),
        "first_message_seconds": round(first_after, 3),
        "rss_before_kb": before["VmRSS"],
        "rss_after_kb": after["VmRSS"],
        "peak_rss_kb": after["VmHWM"],
    }


async def slow_reader(target: str, store_id: int, pid: int, pause: float) -> dict[str, Any]:
    """An export whose reader takes the first message, stops for `pause` seconds, then
    reads the rest: the server's memory before, across the pause, and after."""
    before = memory_kb(pid)["VmRSS"]
    samples = []
    rows = 0
    async with grpc.aio.insecure_channel(target) as channel:
        stub = customer_service_pb2_grpc.CustomerServiceStub(channel)
        call = stub.ExportCustomers(pb.ExportCustomersRequest(store_id=store_id))
        first = await call.read()
        assert isinstance(first, pb.ExportCustomersResponse), first
        rows += len(first.customers)
        until = time.monotonic() + pause
        while time.monotonic() < until:
            samples.append(memory_kb(pid)["VmRSS"])
            await asyncio.sleep(0.25)
        while isinstance(response := await call.read(), pb.ExportCustomersResponse):
            rows += len(response.customers)
    return {
        "rows": rows,
        "rss_before_kb": before,
        "rss_at_pause_start_kb": samples[0],
        "rss_max_during_pause_kb": max(samples),
        "rss_at_pause_end_kb": samples[-1],
        "growth_during_pause_kb": max(samples) - samples[0],
        "growth_from_before_kb": max(samples) - before,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL)
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--pause", type=float, default=10.0)
    options = parser.parse_args(argv)
    scale = Scale(options.customers, 0, 0, warmup=0, duration=0, bcrypt_rounds=4)
    store = prepared_store(options.database_url, scale, reseed=False)
    probe = (store.store_id, store.typical_customer_id)
    with (
        tempfile.TemporaryDirectory() as logs,
        servers.suite(options.database_url, probe, Path(logs), bcrypt_rounds=4) as suite,
    ):
        report = {
            "customers": options.customers,
            "full_speed": asyncio.run(full_speed(suite.target, store.store_id, suite.pid)),
            "slow_reader": asyncio.run(
                slow_reader(suite.target, store.store_id, suite.pid, options.pause)
            ),
        }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
