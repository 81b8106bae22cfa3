"""grpcurl, the real binary, as someone debugging the server uses it: over plaintext,
TLS and mutual TLS, it lists the services through reflection, describes a message that
crosses proto packages, calls every service and shows an error's code and details."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tests.certificates import Authority
from tests.process import grpcurl, migrated_sqlite_env, running_server

SERVICES = {
    "commerce.customers.v1.CustomerService",
    "commerce.orders.v1.OrderService",
    "commerce.orders.v1.CustomerOrderService",
    "commerce.loyalty.v1.CustomerLoyaltyService",
    "commerce.events.v1.EventService",
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
}


class Grpcurl:
    """grpcurl bound to a server and its transport flags."""

    def __init__(self, target: str, flags: list[str]) -> None:
        self.target, self.flags = target, flags

    def __call__(self, *args: str, options: tuple[str, ...] = (), check: bool = True) -> str:
        """`grpcurl <transport flags> <options> <target> <args>`: its output."""
        result = grpcurl(*self.flags, *options, self.target, *args, check=False)
        if check:
            assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout + result.stderr

    def call(self, method: str, request: dict[str, object]) -> dict[str, object]:
        return json.loads(self(method, options=("-d", json.dumps(request))))  # type: ignore[no-any-return]


@pytest.fixture(params=["plaintext", "tls", "mutual-tls"])
def client(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Grpcurl]:
    """A server with store 1 on a fresh database, and grpcurl set up to reach it."""
    env = migrated_sqlite_env(tmp_path, "grpcurl")
    server_flags: list[str] = []
    client_flags = ["-plaintext"]
    credentials = None
    if request.param != "plaintext":
        authority = Authority(tmp_path)
        server_cert = authority.issue("server", server=True)
        server_flags = ["--tls-cert-file", str(server_cert.cert)]
        server_flags += ["--tls-key-file", str(server_cert.key)]
        client_flags = ["-cacert", str(authority.own.cert)]
        credentials = grpc.ssl_channel_credentials(authority.pem)
        if request.param == "mutual-tls":
            client_cert = authority.issue("client", server=False)
            server_flags += ["--tls-client-ca-file", str(authority.own.cert)]
            client_flags += ["-cert", str(client_cert.cert), "-key", str(client_cert.key)]
            credentials = grpc.ssl_channel_credentials(authority.pem, *client_cert.pair())
    with running_server(tmp_path, env, *server_flags, credentials=credentials) as server:
        yield Grpcurl(f"127.0.0.1:{server.port}", client_flags)


def test_list_and_describe_through_reflection(client):
    assert set(client("list").split()) == SERVICES
    methods = client("list", "commerce.orders.v1.CustomerOrderService").split()
    assert "commerce.orders.v1.CustomerOrderService.GetCustomerOrderStats" in methods
    # An order embeds messages of other packages (a customer, money), resolved by
    # reflection with their options (field behaviors, deprecation, HTTP mappings).
    order = client("describe", "commerce.orders.v1.Order")
    assert (
        ".commerce.customers.v1.Customer customer = 5 "
        "[deprecated = true, (.google.api.field_behavior) = OUTPUT_ONLY];"
    ) in order
    assert (
        ".commerce.type.v1.Money total = 15 [(.google.api.field_behavior) = OUTPUT_ONLY];" in order
    )
    rpc = client("describe", "commerce.customers.v1.CustomerService.GetCustomer")
    assert "returns ( .commerce.customers.v1.GetCustomerResponse )" in rpc
    assert 'get:"/v1/stores/{store_id}/customers/{customer_id}"' in rpc


def test_every_service_answers_a_call(client):
    customer = client.call(
        "commerce.customers.v1.CustomerService/CreateCustomer",
        {"store_id": 1, "email": "curl@example.com", "first_name": "Curl"},
    )["customer"]
    placed = client.call(
        "commerce.orders.v1.OrderService/CreateOrder",
        {
            "store_id": 1,
            "customer_id": customer["customer_id"],  # int64 goes out as a JSON string
            "currency_code": "EUR",
            "line_items": [
                {"sku": "MUG-1", "name": "Mug", "quantity": 2, "unit_price_minor": 1299}
            ],
        },
    )["order"]
    assert placed["status"] == "ORDER_STATUS_PENDING"
    read = client.call(
        "commerce.orders.v1.OrderService/GetOrder", {"store_id": 1, "order_id": placed["order_id"]}
    )["order"]
    assert read["customer"]["email"] == "curl@example.com"
    stats = client.call(
        "commerce.orders.v1.CustomerOrderService/GetCustomerOrderStats",
        {"store_id": 1, "customer_id": customer["customer_id"]},
    )["stats"]
    assert stats["total_spent"] == [{"currency_code": "EUR", "amount_minor": "2598"}]
    points = client.call(
        "commerce.loyalty.v1.CustomerLoyaltyService/AddLoyaltyPoints",
        {"store_id": 1, "customer_id": customer["customer_id"], "points": 50, "reason": "curl"},
    )["loyalty"]
    assert points["tier"] == "LOYALTY_TIER_BRONZE"
    health = client.call("grpc.health.v1.Health/Check", {"service": ""})
    assert health == {"status": "SERVING"}


def test_an_error_shows_its_code_and_details(client):
    output = client(
        "commerce.customers.v1.CustomerService/GetCustomer",
        options=("-format-error", "-d", '{"store_id": 1, "customer_id": 42}'),
        check=False,
    )
    error = json.loads(output)
    assert (error["code"], error["message"]) == (
        grpc.StatusCode.NOT_FOUND.value[0],
        "customer 42 not found",
    )
    assert {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "domain": "commerce.customers.v1",
        "reason": "CUSTOMER_NOT_FOUND",
    } in error["details"]
