"""Retries through a flaky network: a proxy between the client and the server cuts
connections a few milliseconds into each call, before or after the server commits.
A client that retries CreateOrder with the same request_id ends with exactly one
order each time, whether the lost attempt had been committed or not."""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import threading
import uuid
from collections import Counter
from collections.abc import Iterator

import grpc
import pytest
from commerce.orders.v1 import order_pb2, order_service_pb2, order_service_pb2_grpc

from tests.process import clean_environment, running_server

LOGICAL_ORDERS = 30
DROPS_PER_ORDER = 3


class CuttingProxy:
    """A TCP proxy on a loopback port. While `cutting` is set, it cuts each new
    connection in the middle of its call, alternately

    - before the server has the whole request: when the client's bytes first go
      past the HTTP/2 handshake (the request's headers are on their way), or
    - after the server committed: when the server's bytes first go past the
      handshake, which happens only once the handler has finished (the response is
      on its way, and lost)."""

    HANDSHAKE_BYTES = 120  # more than either side's preface and SETTINGS frames

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.cutting = threading.Event()
        self.cuts = {"before the request": 0, "after the commit": 0}
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        connections = 0
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            cut_side = None
            if self.cutting.is_set():
                connections += 1
                cut_side = "client" if connections % 2 else "server"
            for source, sink, side in ((client, upstream, "client"), (upstream, client, "server")):
                threading.Thread(
                    target=self._pump, args=(source, sink, cut_side == side, side), daemon=True
                ).start()

    def _pump(self, source: socket.socket, sink: socket.socket, cut: bool, side: str) -> None:
        sent = 0
        try:
            while data := source.recv(65536):
                if cut and sent + len(data) > self.HANDSHAKE_BYTES:
                    self.cuts["before the request" if side == "client" else "after the commit"] += 1
                    return  # the finally clause cuts both directions
                sink.sendall(data)
                sent += len(data)
        except OSError:
            pass
        finally:
            _shut(source, sink)

    def close(self) -> None:
        self.listener.close()


def _shut(*ends: socket.socket) -> None:
    for end in ends:
        with contextlib.suppress(OSError):
            end.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def proxied(tmp_path, database_url, store_id) -> Iterator[tuple[str, str, CuttingProxy]]:
    """(direct target, target through the proxy, the proxy) of a server on the
    suite's database."""
    env = clean_environment(DATABASE_URL=database_url)
    with running_server(tmp_path, env, "--services", "orders") as server:
        proxy = CuttingProxy(server.port)
        try:
            yield server.target, f"127.0.0.1:{proxy.port}", proxy
        finally:
            proxy.close()


def place(target: str, request: order_service_pb2.CreateOrderRequest) -> int | grpc.StatusCode:
    """One attempt on a fresh connection: the order id, or the failure's code."""
    own_connection = [("grpc.use_local_subchannel_pool", 1)]
    with grpc.insecure_channel(target, options=own_connection) as channel:
        stub = order_service_pb2_grpc.OrderServiceStub(channel)
        try:
            return stub.CreateOrder(request, timeout=5).order.order_id
        except grpc.RpcError as error:
            return error.code()  # type: ignore[attr-defined, no-any-return]


def orders_by_email(target: str, store_id: int) -> Counter[str]:
    with grpc.insecure_channel(target) as channel:
        listed = order_service_pb2_grpc.OrderServiceStub(channel).ListOrders(
            order_service_pb2.ListOrdersRequest(store_id=store_id, page_size=500)
        )
    return Counter(order.contact_email for order in listed.orders)


def test_retries_through_cut_connections_create_each_order_once(proxied, store_id):
    direct, through_proxy, proxy = proxied
    acknowledged: dict[str, int] = {}
    committed_but_cut: set[str] = set()  # orders whose response a cut lost
    for number in range(LOGICAL_ORDERS):
        email = f"cut{number}.{uuid.uuid4().hex[:6]}@example.com"
        request = order_service_pb2.CreateOrderRequest(
            store_id=store_id,
            currency_code="EUR",
            contact_email=email,
            request_id=str(uuid.uuid4()),
            line_items=[order_pb2.OrderLineItem(sku="C", name="C", quantity=1, unit_price_minor=9)],
        )
        proxy.cutting.set()
        for attempt in range(DROPS_PER_ORDER + 20):
            if attempt == DROPS_PER_ORDER:
                proxy.cutting.clear()  # the network heals
            answer = place(through_proxy, request)
            if isinstance(answer, int):
                acknowledged[email] = answer
                break
            assert answer in {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
            if orders_by_email(direct, store_id)[email]:
                committed_but_cut.add(email)
    stored = orders_by_email(direct, store_id)
    assert len(acknowledged) == LOGICAL_ORDERS
    assert all(stored[email] == 1 for email in acknowledged), stored
    assert sum(stored.values()) == LOGICAL_ORDERS
    cuts = proxy.cuts
    assert cuts["before the request"] >= LOGICAL_ORDERS // 2
    assert cuts["after the commit"] >= LOGICAL_ORDERS // 2
    # Those orders existed when their caller saw the call fail; the retry got each
    # back through its request_id instead of placing a second one.
    assert len(committed_but_cut) >= LOGICAL_ORDERS // 2
    print(f"orders: {LOGICAL_ORDERS}, cuts: {cuts}, lost responses: {len(committed_but_cut)}")


async def test_calls_their_callers_abandon_give_their_connections_back(orders, store_id):
    """Callers cancel hundreds of CreateOrder calls at random points; the server is
    then as ready as before (on SQLite, a call cancelled midway used to keep the one
    database connection checked out for good)."""
    rng = random.Random(5)  # noqa: S311 (timing, not secrets)
    for number in range(300):
        call = orders.CreateOrder(
            order_service_pb2.CreateOrderRequest(
                store_id=store_id,
                currency_code="EUR",
                contact_email=f"gone{number}@example.com",
                request_id=str(uuid.uuid4()),
                line_items=[order_pb2.OrderLineItem(sku="G", name="G", quantity=1)],
            )
        )
        await asyncio.sleep(rng.uniform(0, 0.01))
        call.cancel()
    # Ready as before: a write and a read go through at once.
    placed = await orders.CreateOrder(
        order_service_pb2.CreateOrderRequest(
            store_id=store_id,
            currency_code="EUR",
            contact_email="after@example.com",
            line_items=[order_pb2.OrderLineItem(sku="A", name="A", quantity=1)],
        ),
        timeout=10,
    )
    read = await orders.GetOrder(
        order_service_pb2.GetOrderRequest(store_id=store_id, order_id=placed.order.order_id),
        timeout=10,
    )
    assert read.order.contact_email == "after@example.com"
