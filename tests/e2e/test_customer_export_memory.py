"""ExportCustomers' flow control, measured on a real `commerce serve` process: a
reader that stops for 10 s while the server still has most of a large store to send
does not grow the server's memory (its resident set, from /proc), and then still
receives every customer."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
from commerce.customers.v1 import customer_service_pb2 as pb
from commerce.customers.v1 import customer_service_pb2_grpc

from tests.e2e.test_customer_export import seed_customers
from tests.process import clean_environment, running_server

CUSTOMERS = 100_000  # about 30 MB of messages, far more than HTTP/2 buffers
PAUSE_SECONDS = 10.0
# What the server may grow by, from before the export to the end of the pause: the
# snapshot and the batches in flight when the reader stopped. Reading on regardless
# of its reader, it grows by most of the export (hundreds of MB of Python objects).
GROWTH_BOUND_KB = 24 * 1024


def resident_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


async def test_a_reader_that_stops_for_10_s_does_not_grow_the_servers_memory(
    sessions, store_id, database_url, tmp_path
):
    await seed_customers(sessions, store_id, CUSTOMERS)
    env = clean_environment(DATABASE_URL=database_url)
    with running_server(tmp_path, env, "--services", "customers") as server:
        pid = server.process.pid
        async with grpc.aio.insecure_channel(server.target) as channel:
            stub = customer_service_pb2_grpc.CustomerServiceStub(channel)
            idle = resident_kb(pid)
            call = stub.ExportCustomers(pb.ExportCustomersRequest(store_id=store_id), timeout=120)
            received = len((await call.read()).customers)
            # The reader stands still; the server is left with nearly all of it.
            loop = asyncio.get_running_loop()
            samples = [resident_kb(pid)]
            until = loop.time() + PAUSE_SECONDS
            while loop.time() < until:
                await asyncio.sleep(0.25)  # the pause is the scenario: sample across it
                samples.append(resident_kb(pid))
            while (response := await call.read()) is not grpc.aio.EOF:
                received += len(response.customers)
    assert received == CUSTOMERS
    growth = max(samples) - idle
    assert growth < GROWTH_BOUND_KB, f"grew by {growth} kB while the reader stood still"
