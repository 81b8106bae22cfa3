"""The REST paths of the HTTP gateway as plain HTTP callers use them: the curl binary
against a real `commerce serve` process, at the paths the protos' google.api.http
rules declare (`GET /v1/stores/1/customers/42`), transcoded to the same servicers,
interceptors and errors as gRPC; errors as google.rpc.Status JSON."""

from __future__ import annotations

import json
import shutil
import uuid
from dataclasses import dataclass
from typing import Any

import pytest

from tests.e2e.helpers import PASSWORD
from tests.e2e.test_callers import new_caller
from tests.e2e.test_http_gateway import exchange, serve_http
from tests.process import migrated_sqlite_env

CURL = shutil.which("curl")
pytestmark = pytest.mark.skipif(CURL is None, reason="needs the curl binary")
ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"
BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"
RESOURCE_INFO = "type.googleapis.com/google.rpc.ResourceInfo"


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: Any

    def detail(self, type_url: str) -> dict[str, Any]:
        """The google.rpc.Status detail of that type, as its JSON."""
        for detail in self.body["details"]:
            if detail["@type"] == type_url:
                return dict(detail)
        raise AssertionError(f"no {type_url} in {self.body}")


def rest(
    port: int, method: str, path: str, body: dict[str, Any] | None = None, *options: str
) -> Answer:
    """`method path` (query string included) on the HTTP port, with `body` as JSON."""
    data = ["--data-binary", json.dumps(body), "-H", "content-type: application/json"]
    return Answer(
        *exchange(
            "-X",
            method,
            *(data if body is not None else []),
            *options,
            f"http://127.0.0.1:{port}{path}",
        )
    )


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """One migrated SQLite database with store 1 for the module's servers (each test
    uses emails of its own)."""
    return migrated_sqlite_env(tmp_path_factory.mktemp("rest"), "REST")


def unique_email() -> str:
    return f"rest.{uuid.uuid4().hex[:10]}@example.com"


def create_customer(port: int, **fields: Any) -> dict[str, Any]:
    created = rest(port, "POST", "/v1/stores/1/customers", {"email": unique_email(), **fields})
    assert created.status == 200, created.body
    return dict(created.body["customer"])


@pytest.fixture(scope="module")
def http_port(tmp_path_factory: pytest.TempPathFactory, env: dict[str, str]):  # type: ignore[no-untyped-def]
    """One server with the gateway for the module's tests of ordinary calls."""
    port, server = serve_http(tmp_path_factory.mktemp("rest-server"), env)
    with server:
        yield port


def test_create_with_request_id_replays_and_get_reads_it(http_port):
    request_id = str(uuid.uuid4())
    create = {"email": unique_email(), "firstName": "Ann", "requestId": request_id}
    created = rest(http_port, "POST", "/v1/stores/1/customers", create)
    assert created.status == 200, created.body
    assert created.headers["content-type"] == "application/json"
    customer = created.body["customer"]
    assert (customer["storeId"], customer["email"], customer["firstName"]) == (
        "1",
        create["email"],
        "Ann",
    )
    # The same requestId again: the first answer, no second customer.
    assert rest(http_port, "POST", "/v1/stores/1/customers", create).body == created.body

    read = rest(http_port, "GET", f"/v1/stores/1/customers/{customer['customerId']}")
    assert read.status == 200
    assert read.body == created.body


def test_patch_changes_only_the_fields_of_the_update_mask(http_port):
    customer = create_customer(http_port, firstName="Ann", lastName="Lee")
    path = f"/v1/stores/1/customers/{customer['customerId']}?updateMask=firstName"
    patched = rest(http_port, "PATCH", path, {"firstName": "Bea", "lastName": "Ignored"})
    assert patched.status == 200, patched.body
    assert (patched.body["customer"]["firstName"], patched.body["customer"]["lastName"]) == (
        "Bea",
        "Lee",
    )


def test_a_custom_method_takes_its_body_and_path(http_port):
    customer = create_customer(http_port)
    path = f"/v1/stores/1/customers/{customer['customerId']}:setStatus"
    changed = rest(http_port, "POST", path, {"status": "CUSTOMER_STATUS_INACTIVE"})
    assert changed.status == 200, changed.body
    assert changed.body["customer"]["status"] == "CUSTOMER_STATUS_INACTIVE"
    read = rest(http_port, "GET", f"/v1/stores/1/customers/{customer['customerId']}")
    assert read.body["customer"]["status"] == "CUSTOMER_STATUS_INACTIVE"


def test_lists_take_query_parameters_repeated_fields_by_repetition(http_port):
    first, second, third = (create_customer(http_port) for _ in range(3))
    ids = f"customerIds={third['customerId']}&customer_ids={first['customerId']}"
    batch = rest(http_port, "GET", f"/v1/stores/1/customers:batchGet?{ids}")
    assert batch.status == 200, batch.body
    assert [c["customerId"] for c in batch.body["customers"]] == [
        third["customerId"],
        first["customerId"],
    ]

    line = {"sku": "SKU-1", "name": "Widget", "quantity": 1}
    order = {"customerId": second["customerId"], "currencyCode": "EUR", "lineItems": [line]}
    placed = rest(http_port, "POST", "/v1/stores/1/orders", order)
    assert placed.status == 200, placed.body
    mine = f"/v1/stores/1/orders?pageSize=10&customerId={second['customerId']}"
    # Enums by name or by number (ORDER_STATUS_PAID is 2).
    pending = rest(http_port, "GET", f"{mine}&status=ORDER_STATUS_PENDING")
    assert pending.status == 200, pending.body
    assert [o["orderId"] for o in pending.body["orders"]] == [placed.body["order"]["orderId"]]
    none_paid = rest(http_port, "GET", f"{mine}&status=2")
    assert none_paid.status == 200, none_paid.body
    assert none_paid.body == {}  # no orders: an empty message, as proto3 JSON writes it
    since = rest(http_port, "GET", f"{mine}&createTimeStart=2999-01-01T00:00:00Z")
    assert since.body == {}


def test_order_status_changes_take_etag_and_request_id_over_rest(http_port):
    line = {"sku": "SKU-1", "name": "Widget", "quantity": 1, "unitPrice": {"amountMinor": "500"}}
    order = {"currencyCode": "EUR", "lineItems": [line]}
    placed = rest(http_port, "POST", "/v1/stores/1/orders", order).body["order"]
    assert placed["etag"] == "r1"
    path = f"/v1/stores/1/orders/{placed['orderId']}"

    stale = rest(http_port, "POST", f"{path}:pay", {"etag": "r0"})
    assert stale.status == 409, stale.body
    assert stale.detail(ERROR_INFO)["reason"] == "ETAG_MISMATCH"

    pay = {"etag": placed["etag"], "requestId": str(uuid.uuid4())}
    paid = rest(http_port, "POST", f"{path}:pay", pay)
    assert paid.status == 200, paid.body
    assert paid.body["order"]["status"] == "ORDER_STATUS_PAID"
    # The retry of a change that landed answers as the first try did.
    again = rest(http_port, "POST", f"{path}:pay", pay)
    assert again.status == 200, again.body
    assert again.body == paid.body
    # Without its request_id, the same change is refused: the order is PAID already.
    refused = rest(http_port, "POST", f"{path}:pay", {})
    assert refused.status == 400, refused.body
    assert refused.detail(ERROR_INFO)["reason"] == "INVALID_STATUS_TRANSITION"

    shipped = rest(http_port, "POST", f"{path}:ship", {"trackingReference": "TRK-1"})
    assert shipped.body["order"]["trackingReference"] == "TRK-1"
    # A repeated enum from the query string, by repetition.
    listed = rest(
        http_port,
        "GET",
        "/v1/stores/1/orders?guestsOnly=true&statuses=ORDER_STATUS_SHIPPED"
        "&statuses=ORDER_STATUS_DELIVERED&pageSize=500",
    )
    assert listed.status == 200, listed.body
    assert placed["orderId"] in [listed_order["orderId"] for listed_order in listed.body["orders"]]
    assert {o["status"] for o in listed.body["orders"]} <= {
        "ORDER_STATUS_SHIPPED",
        "ORDER_STATUS_DELIVERED",
    }


def test_errors_are_google_rpc_status_bodies(http_port, tmp_path):
    unknown = rest(http_port, "GET", "/v1/stores/1/nothing")
    assert unknown.status == 404
    assert unknown.body["code"] == 5
    assert unknown.detail(ERROR_INFO)["reason"] == "ROUTE_NOT_FOUND"

    wrong_verb = rest(http_port, "DELETE", "/v1/stores/1/customers/1")
    assert wrong_verb.status == 405
    assert wrong_verb.headers["allow"] == "GET, PATCH"
    assert wrong_verb.detail(ERROR_INFO)["reason"] == "METHOD_NOT_ALLOWED"

    not_a_number = rest(http_port, "GET", "/v1/stores/1/customers/abc")
    assert not_a_number.status == 400
    assert not_a_number.body["code"] == 3
    violations = not_a_number.detail(BAD_REQUEST)["fieldViolations"]
    assert [violation["field"] for violation in violations] == ["customer_id"]

    missing = rest(http_port, "GET", "/v1/stores/1/customers/999999")
    assert missing.status == 404
    assert set(missing.body) == {"code", "message", "details"}
    assert (missing.body["code"], missing.body["message"]) == (5, "customer 999999 not found")
    info = missing.detail(ERROR_INFO)
    assert (info["reason"], info["domain"]) == ("CUSTOMER_NOT_FOUND", "commerce.customers.v1")
    resource = missing.detail(RESOURCE_INFO)
    assert (resource["resourceType"], resource["resourceName"]) == (
        "customer",
        "stores/1/customers/999999",
    )

    bogus = rest(http_port, "GET", "/v1/stores/1/customers?pageSize=5&bogus=1")
    assert bogus.status == 400
    assert [v["field"] for v in bogus.detail(BAD_REQUEST)["fieldViolations"]] == ["bogus"]

    misspelt = rest(http_port, "POST", "/v1/stores/1/customers", {"emial": unique_email()})
    assert misspelt.status == 400
    assert misspelt.detail(ERROR_INFO)["reason"] == "MALFORMED_REQUEST"

    huge = tmp_path / "huge.json"
    huge.write_text(json.dumps({"email": "a" * (5 << 20)}))  # beyond the 4-MiB default
    upload = ("--data-binary", f"@{huge}", "-H", "expect:")  # no 100 Continue to parse
    too_large = rest(http_port, "POST", "/v1/stores/1/customers", None, *upload)
    assert too_large.status == 429
    assert too_large.detail(ERROR_INFO)["reason"] == "REQUEST_TOO_LARGE"

    # The service's own validation, as over gRPC.
    invalid = rest(http_port, "POST", "/v1/stores/1/customers", {"email": "not-an-email"})
    assert invalid.status == 400
    assert [v["field"] for v in invalid.detail(BAD_REQUEST)["fieldViolations"]] == ["email"]


def test_tokens_and_deadlines_apply_to_rest_calls(tmp_path, env):
    token, line = new_caller("web")
    callers = tmp_path / "callers"
    callers.write_text(line + "\n")
    slow_hashing = env | {"COMMERCE_BCRYPT_ROUNDS": "16"}  # seconds per password
    http_port, server = serve_http(tmp_path, slow_hashing, "--caller-tokens-file", str(callers))
    with server:
        refused = rest(http_port, "GET", "/v1/stores/1/customers")
        assert refused.status == 401
        assert refused.headers["www-authenticate"] == "Bearer"
        assert refused.detail(ERROR_INFO)["reason"] == "CALLER_UNAUTHENTICATED"
        bearer = ("-H", f"authorization: Bearer {token}")
        listed = rest(http_port, "GET", "/v1/stores/1/customers?pageSize=1", None, *bearer)
        assert listed.status == 200, listed.body

        slow = {"email": unique_email(), "password": PASSWORD}
        late = rest(
            http_port,
            "POST",
            "/v1/stores/1/customers",
            slow,
            *bearer,
            "-H",
            "connect-timeout-ms: 200",
        )
        assert late.status == 504
        assert late.body["code"] == 4


def test_tags_are_added_and_removed_by_custom_methods_and_filter_the_list(http_port):
    customer = create_customer(http_port, tags=["Gold"])
    assert customer["tags"] == ["gold"]
    path = f"/v1/stores/1/customers/{customer['customerId']}"
    added = rest(http_port, "POST", f"{path}:addTags", {"tags": ["VIP", "gold"]})
    assert added.status == 200, added.body
    assert added.body["customer"]["tags"] == ["gold", "vip"]
    listed = rest(http_port, "GET", "/v1/stores/1/customers?tag=VIP&pageSize=500")
    assert customer["customerId"] in [c["customerId"] for c in listed.body["customers"]]

    bad = rest(http_port, "POST", f"{path}:addTags", {"tags": ["ok", "a,b"]})
    assert bad.status == 400, bad.body
    assert [v["field"] for v in bad.detail(BAD_REQUEST)["fieldViolations"]] == ["tags[1]"]

    removed = rest(http_port, "POST", f"{path}:removeTags", {"tags": ["gold"], "etag": "r2"})
    assert removed.status == 200, removed.body
    assert removed.body["customer"]["tags"] == ["vip"]
