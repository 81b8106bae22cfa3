"""What the HTTP gateway makes of an HTTP request on its way to gRPC, and of the gRPC
answer on its way back: seen by a recording servicer behind a real grpc.aio server,
called with the curl binary through the gateway on a real HTTP port."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from commerce.customers.v1 import customer_pb2, customer_service_pb2, customer_service_pb2_grpc

from services.core.http.gateway import gateway_app
from services.core.http.listener import HttpListener
from services.core.rpc.callers import CLIENT_ADDRESS_KEY
from services.listen import listening_sockets

CURL = shutil.which("curl")
pytestmark = pytest.mark.skipif(CURL is None, reason="needs the curl binary")
SERVICE = customer_service_pb2.DESCRIPTOR.services_by_name["CustomerService"]


class Recording(customer_service_pb2_grpc.CustomerServiceServicer):
    """Answers GetCustomer, remembering the metadata and deadline it came with."""

    def __init__(self) -> None:
        self.metadata: list[tuple[str, Any]] = []
        self.time_remaining: float | None = None

    async def GetCustomer(self, request, context):  # type: ignore[no-untyped-def]
        self.metadata = list(context.invocation_metadata())
        self.time_remaining = context.time_remaining()
        await context.send_initial_metadata([("x-served-by", "recording")])
        context.set_trailing_metadata([("x-checked", "yes")])
        return customer_service_pb2.GetCustomerResponse(
            customer=customer_pb2.Customer(store_id=request.store_id, customer_id=7)
        )


@pytest.fixture
async def gateway() -> AsyncIterator[tuple[int, Recording]]:
    recording = Recording()
    server = grpc.aio.server()
    customer_service_pb2_grpc.add_CustomerServiceServicer_to_server(recording, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    sockets = listening_sockets("127.0.0.1:0", share_port=False, setting="test")
    listener = HttpListener(
        gateway_app(channel, [SERVICE], max_message_bytes=1 << 20), sockets, grace_seconds=1
    )
    await listener.start()
    try:
        yield sockets[0].getsockname()[1], recording
    finally:
        await listener.stop()
        await channel.close()
        await server.stop(0)


async def curl(port: int, *headers: str) -> tuple[dict[str, str], dict[str, Any]]:
    """POSTs GetCustomer with these extra headers: (response headers, JSON body)."""
    arguments = ["-sS", "-i", "--data-binary", '{"storeId": 3}']
    for header in ("content-type: application/json", *headers):
        arguments += ["-H", header]
    url = f"http://127.0.0.1:{port}/{SERVICE.full_name}/GetCustomer"
    process = await asyncio.create_subprocess_exec(
        CURL or "curl", *arguments, url, stdout=asyncio.subprocess.PIPE
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    head, _, body = output.decode().partition("\r\n\r\n")
    fields = dict(line.split(": ", 1) for line in head.split("\r\n")[1:])
    return {key.lower(): value for key, value in fields.items()}, json.loads(body)


async def test_headers_become_metadata_and_the_gateway_names_the_client(gateway):
    port, recording = gateway
    binary = base64.b64encode(b"\x00\x01\xff").decode().rstrip("=")
    headers, body = await curl(
        port,
        "authorization: Bearer abc",
        "x-tenant-hint: blue",
        f"x-trace-bin: {binary}",
        f"{CLIENT_ADDRESS_KEY}: 10.9.9.9",  # an HTTP caller posing as another address
        "grpc-timeout: 1n",
        "connect-protocol-version: 1",
        "x!odd: a header name gRPC has no metadata key for",
    )
    assert body == {"customer": {"storeId": "3", "customerId": "7"}}
    metadata = dict(recording.metadata)
    assert metadata["authorization"] == "Bearer abc"
    assert metadata["x-tenant-hint"] == "blue"
    assert metadata["x-trace-bin"] == b"\x00\x01\xff"
    assert [value for key, value in recording.metadata if key == CLIENT_ADDRESS_KEY] == [
        "127.0.0.1"
    ]
    for hop in ("host", "connection", "content-type", "connect-protocol-version", "accept"):
        assert hop not in metadata
    assert recording.time_remaining is None  # no connect-timeout-ms, no deadline
    # The servicer's response metadata comes back as headers; its trailers as
    # Connect's `trailer-` headers.
    assert headers["x-served-by"] == "recording"
    assert headers["trailer-x-checked"] == "yes"


async def test_connect_timeout_ms_becomes_the_grpc_deadline(gateway):
    port, recording = gateway
    await curl(port, "connect-timeout-ms: 5000")
    assert recording.time_remaining is not None
    assert 0 < recording.time_remaining <= 5
