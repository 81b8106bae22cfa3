"""Order numbers stay unique (and, as every create succeeds, gap-free) when two server
processes place orders in one store at once: the store's counter row is the only
arbiter, not a process."""

from __future__ import annotations

import asyncio
import re

import grpc
from commerce.orders.v1 import order_service_pb2_grpc

from tests.e2e.helpers import create_order
from tests.process import clean_environment, listeners, running_server, wait_for

CONNECTIONS = 16
ORDERS_PER_CONNECTION = 15


async def test_two_workers_hand_out_distinct_order_numbers(tmp_path, database_url, store_id):
    env = clean_environment(DATABASE_URL=database_url)
    with running_server(tmp_path, env, "--workers", "2", "--services", "orders") as server:
        wait_for(lambda: len(listeners(server.port)) == 2)
        # Each channel its own connection (no shared subchannel pool), which the kernel
        # spreads over both workers.
        own_connection = [("grpc.use_local_subchannel_pool", 1)]
        channels = [
            grpc.aio.insecure_channel(server.target, options=own_connection)
            for _ in range(CONNECTIONS)
        ]
        try:
            placed = await asyncio.gather(
                *(
                    create_order(order_service_pb2_grpc.OrderServiceStub(channel), store_id)
                    for channel in channels
                    for _ in range(ORDERS_PER_CONNECTION)
                )
            )
        finally:
            await asyncio.gather(*(channel.close() for channel in channels))
        # Both workers took part (the log's text format names the process); the lines
        # per RPC are written in batches (services.core.logs), within 0.1 s.
        wait_for(lambda: len(_served_by(server.output())) == 2)
    total = CONNECTIONS * ORDERS_PER_CONNECTION
    assert sorted(order.order_id for order in placed) == list(range(1, total + 1))
    assert len({order.order_number for order in placed}) == total


def _served_by(log: str) -> set[str]:
    """The processes whose log lines show a CreateOrder that succeeded."""
    return set(re.findall(r"\[(\d+)\] commerce\.rpc .*CreateOrder .*code=OK", log))
