"""What the HTTP gateway costs: GetCustomer and CreateOrder through gRPC and through
the gateway (Connect protocol, JSON over HTTP/1.1; GetCustomer also at its REST path,
`GET /v1/stores/1/customers/<id>`), on one `commerce serve` process and a throwaway
PostgreSQL database, in alternating rounds.

    .venv/bin/python -m bench.gateway [--database-url URL] [--rounds 2] [--seconds 8]

gRPC: h2load, 2 HTTP/2 connections x 16 streams; HTTP: h2load --h1, 32 connections,
one request each at a time: 32 calls in flight either way. Server CPU per call from
/proc (the process, gateway included)."""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Sequence
from functools import partial

import grpc
from commerce.customers.v1 import customer_service_pb2, customer_service_pb2_grpc
from commerce.orders.v1 import order_pb2, order_service_pb2
from google.protobuf import json_format
from google.protobuf.message import Message

from bench.measure import GRPC_HEADERS, H2Load, Result, grpc_frame
from bench.servers import free_port
from bench.throwaway import commerce_server

DEFAULT_DATABASE = "postgresql://postgres@127.0.0.1:5432/test"
HTTP_HEADERS = ("content-type: application/json",)


def _json(message: Message) -> bytes:
    return json.dumps(json_format.MessageToDict(message), separators=(",", ":")).encode()


async def _customer(target: str) -> int:
    async with grpc.aio.insecure_channel(target) as channel:
        created = await customer_service_pb2_grpc.CustomerServiceStub(channel).CreateCustomer(
            customer_service_pb2.CreateCustomerRequest(
                store_id=1, email="bench@example.com", first_name="Bench"
            )
        )
    return int(created.customer.customer_id)


def _requests(customer_id: int) -> dict[str, tuple[str, Message]]:
    line = order_pb2.OrderLineItem(sku="SKU-1", name="Widget", quantity=2, unit_price_minor=1250)
    return {
        "GetCustomer": (
            "/commerce.customers.v1.CustomerService/GetCustomer",
            customer_service_pb2.GetCustomerRequest(store_id=1, customer_id=customer_id),
        ),
        "CreateOrder": (
            "/commerce.orders.v1.OrderService/CreateOrder",
            order_service_pb2.CreateOrderRequest(
                store_id=1, customer_id=customer_id, currency_code="EUR", line_items=[line]
            ),
        ),
    }


def _rest_path(request: Message) -> str:
    """GetCustomer's path under its google.api.http rule."""
    assert isinstance(request, customer_service_pb2.GetCustomerRequest)
    return f"/v1/stores/{request.store_id}/customers/{request.customer_id}"


def _row(name: str, transport: str, results: Sequence[Result]) -> str:
    whole = Result.combined(results)
    rates = " / ".join(f"{result.per_second:,.0f}" for result in results)
    return (
        f"| {name} | {transport} | {rates} | {whole.percentile(0.5):.1f} | "
        f"{whole.percentile(0.99):.1f} | {whole.cpu_ms_per_1000 / 1000:.3f} | {whole.errors} |"
    )


async def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gateway", description=__doc__)
    parser.add_argument("--database-url", default=DEFAULT_DATABASE)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args(argv)
    http_port = free_port()
    flags = ("--http-listen-address", f"127.0.0.1:{http_port}")
    grpc_load = H2Load(connections=2, streams=16, warmup=2, duration=args.seconds)
    http_load = H2Load(connections=32, streams=1, warmup=2, duration=args.seconds, http1=True)
    async with commerce_server(args.database_url, stores=1, serve_flags=flags) as (target, pid):
        requests = _requests(await _customer(target))
        results: dict[tuple[str, str], list[Result]] = {}
        for _ in range(args.rounds):
            for name, (path, message) in requests.items():
                grpc_run = partial(
                    grpc_load.run,
                    f"http://{target}{path}",
                    pid,
                    body=grpc_frame(message.SerializeToString()),
                    headers=GRPC_HEADERS,
                )
                http_run = partial(
                    http_load.run,
                    f"http://127.0.0.1:{http_port}{path}",
                    pid,
                    body=_json(message),
                    headers=HTTP_HEADERS,
                )
                runs = [("gRPC", grpc_run), ("HTTP gateway", http_run)]
                if name == "GetCustomer":
                    rest_url = f"http://127.0.0.1:{http_port}{_rest_path(message)}"
                    runs.append(("HTTP gateway, REST", partial(http_load.run, rest_url, pid)))
                for transport, run in runs:
                    result = await asyncio.to_thread(run)
                    results.setdefault((name, transport), []).append(result)
    print("| call | path | req/s (each round) | p50 ms | p99 ms | server CPU ms / call | errors |")
    print("|---|---|---|---|---|---|---|")
    for (name, transport), measured in results.items():
        print(_row(name, transport, measured))
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
