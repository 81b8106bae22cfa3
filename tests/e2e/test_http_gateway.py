"""The HTTP gateway as plain HTTP callers use it: the curl binary against a real
`commerce serve` process, in the Connect protocol (POST a JSON body to
/<package>.<Service>/<Method>), reaching the same servicers, interceptors and errors
as gRPC."""

from __future__ import annotations

import base64
import json
import shutil
import signal
import socket
import subprocess
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from commerce.customers.v1 import customer_service_pb2_grpc
from google.rpc import error_details_pb2

from tests.certificates import Authority
from tests.e2e.helpers import PASSWORD, pb
from tests.e2e.test_callers import new_caller
from tests.process import (
    clean_environment,
    commerce,
    free_port,
    listeners,
    migrated_sqlite_env,
    running_server,
    wait_for,
)

CURL = shutil.which("curl")
pytestmark = pytest.mark.skipif(CURL is None, reason="needs the curl binary")
CUSTOMERS = "commerce.customers.v1.CustomerService"


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: dict[str, Any]

    def detail(self, kind: type[Any]) -> Any:
        """The error detail of that google.rpc type, decoded from its base64 bytes."""
        name = kind.DESCRIPTOR.full_name
        for detail in self.body.get("details", []):
            if detail["type"] == name:
                return kind.FromString(base64.b64decode(detail["value"] + "=="))
        raise AssertionError(f"no {name} in {self.body}")


def exchange(*arguments: str) -> tuple[int, dict[str, str], Any]:
    """Runs curl with `arguments` (URL included); the answer's status, headers (names
    in lower case) and JSON body ({} when empty)."""
    result = subprocess.run(
        [CURL or "curl", "-sS", "-i", "--max-time", "60", *arguments],
        capture_output=True,
        text=True,
        timeout=90,
        check=True,
    )
    # Text mode reads HTTP's CRLF line ends as plain newlines.
    head, _, payload = result.stdout.partition("\n\n")
    status_line, *header_lines = head.splitlines()
    headers = {}
    for line in header_lines:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, json.loads(payload) if payload else {}


def curl(
    port: int,
    method: str,
    body: dict[str, Any] | str,
    *options: str,
    content_type: str = "application/json",
) -> Answer:
    """POSTs `body` (JSON) to /commerce.customers.v1.CustomerService/<method>."""
    text = body if isinstance(body, str) else json.dumps(body)
    return Answer(
        *exchange(
            "-H",
            f"content-type: {content_type}",
            "--data-binary",
            text,
            *options,
            f"http://127.0.0.1:{port}/{CUSTOMERS}/{method}",
        )
    )


def serve_http(tmp_path: Path, env: dict[str, str], *args: str):  # type: ignore[no-untyped-def]
    http_port = free_port()
    return http_port, running_server(
        tmp_path, env, "--http-listen-address", f"127.0.0.1:{http_port}", *args
    )


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """One migrated SQLite database with store 1 for the module's servers (each test
    uses emails of its own)."""
    return migrated_sqlite_env(tmp_path_factory.mktemp("http"), "HTTP")


def unique_email() -> str:
    return f"http.{uuid.uuid4().hex[:10]}@example.com"


def test_a_write_and_a_read_through_curl_reach_the_grpc_servicers(tmp_path, env):
    http_port, server = serve_http(tmp_path, env)
    with server as running:
        email = unique_email()
        request_id = str(uuid.uuid4())
        create = {"storeId": "1", "email": email, "firstName": "Ann", "requestId": request_id}
        created = curl(http_port, "CreateCustomer", create)
        assert created.status == 200, created.body
        assert created.headers["content-type"] == "application/json"
        customer = created.body["customer"]
        assert (customer["email"], customer["firstName"]) == (email, "Ann")
        # The same request_id again: the first result, no second customer.
        assert curl(http_port, "CreateCustomer", create).body == created.body

        read = curl(http_port, "GetCustomer", {"storeId": 1, "customerId": customer["customerId"]})
        assert read.status == 200
        assert read.body == created.body
        with grpc.insecure_channel(running.target) as channel:
            stub = customer_service_pb2_grpc.CustomerServiceStub(channel)
            listing = stub.ListCustomers(pb.ListCustomersRequest(store_id=1), timeout=10)
        assert email in [c.email for c in listing.customers]
        assert "POST /" not in running.output()  # no access log line per request


def test_errors_are_connect_error_bodies_with_the_grpc_details(tmp_path, env):
    http_port, server = serve_http(tmp_path, env)
    with server:
        invalid = curl(http_port, "CreateCustomer", {"storeId": 1, "email": "not-an-email"})
        assert invalid.status == 400
        assert invalid.body["code"] == "invalid_argument"
        info = invalid.detail(error_details_pb2.ErrorInfo)
        assert (info.reason, info.domain) == ("INVALID_ARGUMENT", "commerce.customers.v1")
        violations = invalid.detail(error_details_pb2.BadRequest).field_violations
        assert [violation.field for violation in violations] == ["email"]
        # Each detail is also readable as JSON, for people with curl.
        debug = {detail["type"]: detail["debug"] for detail in invalid.body["details"]}
        assert debug["google.rpc.BadRequest"]["fieldViolations"][0]["field"] == "email"

        missing = curl(http_port, "GetCustomer", {"storeId": 1, "customerId": 999999})
        assert missing.status == 404
        assert missing.body["code"] == "not_found"
        assert missing.detail(error_details_pb2.ErrorInfo).reason == "CUSTOMER_NOT_FOUND"
        resource = missing.detail(error_details_pb2.ResourceInfo)
        assert (resource.resource_type, resource.resource_name) == (
            "customer",
            "stores/1/customers/999999",
        )

        # A misspelt field is refused, not ignored; so is a body that is no JSON.
        for body, named in (('{"storeId": 1, "emial": "a@example.com"}', "emial"), ("{", "JSON")):
            malformed = curl(http_port, "CreateCustomer", body)
            assert malformed.status == 400
            assert malformed.detail(error_details_pb2.ErrorInfo).reason == "MALFORMED_REQUEST"
            assert named in malformed.body["message"]

        grpc_over_http1 = curl(http_port, "GetCustomer", "{}", content_type="application/grpc")
        assert grpc_over_http1.status == 415


def test_connect_timeout_ms_is_the_calls_deadline(tmp_path, env):
    # bcrypt at cost 16 takes seconds: far longer than the deadline.
    http_port, server = serve_http(tmp_path, env | {"COMMERCE_BCRYPT_ROUNDS": "16"})
    with server:
        slow = {"storeId": 1, "email": unique_email(), "password": PASSWORD}
        late = curl(http_port, "CreateCustomer", slow, "-H", "connect-timeout-ms: 200")
        assert late.status == 504
        assert late.body["code"] == "deadline_exceeded"
        bad = curl(http_port, "GetCustomer", {"storeId": 1}, "-H", "connect-timeout-ms: soon")
        assert bad.status == 400


def test_caller_tokens_work_over_http(tmp_path, env):
    token, line = new_caller("web")
    callers = tmp_path / "callers"
    callers.write_text(line + "\n")
    http_port, server = serve_http(tmp_path, env, "--caller-tokens-file", str(callers))
    with server:
        request = {"storeId": 1, "email": unique_email()}
        refused = curl(http_port, "CreateCustomer", request)
        assert refused.status == 401
        assert refused.detail(error_details_pb2.ErrorInfo).reason == "CALLER_UNAUTHENTICATED"
        assert refused.headers["www-authenticate"] == "Bearer"
        wrong = curl(http_port, "CreateCustomer", request, "-H", f"authorization: Bearer {token}x")
        assert wrong.status == 401
        created = curl(http_port, "CreateCustomer", request, "-H", f"authorization: Bearer {token}")
        assert created.status == 200
        assert created.body["customer"]["email"] == request["email"]


def login(port: int, *options: str) -> Answer:
    """A failed login of an unknown email (a new one each time: only the per-caller
    count grows)."""
    request = {"storeId": 1, "email": unique_email(), "password": "wrong password"}
    return curl(port, "AuthenticateCustomer", request, *options)


def grpc_login(target: str, metadata: list[tuple[str, str]] | None = None) -> grpc.StatusCode:
    with grpc.insecure_channel(target) as channel:
        try:
            customer_service_pb2_grpc.CustomerServiceStub(channel).AuthenticateCustomer(
                pb.AuthenticateCustomerRequest(
                    store_id=1, email=unique_email(), password="wrong password"
                ),
                metadata=metadata,
                timeout=10,
            )
        except grpc.RpcError as error:
            return error.code()
    return grpc.StatusCode.OK


def test_the_login_throttle_counts_the_http_clients_own_address(tmp_path, env):
    """The per-caller throttle counts an HTTP caller by its own address (not the
    gateway's), and nobody can pose as another address, by HTTP header or by gRPC
    metadata."""
    limit = 3
    http_port, server = serve_http(tmp_path, env, "--login-failures-per-caller", str(limit))
    with server as running:
        # From 127.0.0.2, each attempt claiming another address: all count for 127.0.0.2.
        for n in range(limit):
            spoofed = ("-H", f"commerce-client-address: 10.0.0.{n}")
            assert login(http_port, "--interface", "127.0.0.2", *spoofed).status == 401
        spoofed = ("-H", "commerce-client-address: 10.0.0.9")
        throttled = login(http_port, "--interface", "127.0.0.2", *spoofed)
        assert throttled.status == 429
        assert throttled.detail(error_details_pb2.ErrorInfo).reason == "TOO_MANY_LOGIN_ATTEMPTS"
        assert int(throttled.headers["retry-after"]) > 0
        # Another address is not throttled, over HTTP or gRPC (127.0.0.1 both).
        assert login(http_port, "--interface", "127.0.0.3").status == 401
        assert grpc_login(running.target) == grpc.StatusCode.UNAUTHENTICATED
        # gRPC callers cannot claim an address in the gateway's metadata key either.
        for n in range(limit - 1):
            spoofed_md = [("commerce-client-address", f"10.1.0.{n}")]
            assert grpc_login(running.target, spoofed_md) == grpc.StatusCode.UNAUTHENTICATED
        last = [("commerce-client-address", "10.1.0.9")]
        assert grpc_login(running.target, last) == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_the_gateway_is_off_unless_asked_for(tmp_path, env):
    with running_server(tmp_path, env) as server:
        assert "HTTP" not in server.output()
        out = subprocess.run(
            ["ss", "-Hltnp"],  # noqa: S607 (iproute2's ss, from PATH)
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        ports = {
            line.split()[3].rpartition(":")[2]
            for line in out.splitlines()
            if f"pid={server.process.pid}," in line
        }
        assert ports == {str(server.port)}


def test_sigterm_stops_accepting_and_lets_http_calls_in_flight_finish(tmp_path, env):
    # A create with a password at bcrypt cost 15 is in flight for seconds.
    http_port, server = serve_http(
        tmp_path, env | {"COMMERCE_BCRYPT_ROUNDS": "15"}, "--grace-seconds", "60"
    )
    with server as running:
        answers: list[Answer] = []
        slow = {"storeId": 1, "email": unique_email(), "password": PASSWORD}
        caller = threading.Thread(
            target=lambda: answers.append(curl(http_port, "CreateCustomer", slow))
        )
        caller.start()
        wait_for(lambda: _in_flight(http_port))
        running.process.send_signal(signal.SIGTERM)
        wait_for(lambda: _refused(http_port))
        refused_while_in_flight = caller.is_alive()
        caller.join(timeout=90)
        assert running.process.wait(timeout=90) == 0
    assert refused_while_in_flight  # new connections refused before the call ended
    assert [answer.status for answer in answers] == [200]
    assert listeners(http_port) == set()


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


def _in_flight(port: int) -> bool:
    """Whether the server holds an HTTP connection from curl open (the call is in)."""
    out = subprocess.run(
        ["ss", "-Htn", "state", "established", f"sport = :{port}"],  # noqa: S607
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return bool(out.strip())


def test_every_worker_serves_the_http_port(tmp_path, env):
    http_port, server = serve_http(tmp_path, env, "--workers", "2")
    with server as running:
        wait_for(lambda: len(listeners(http_port)) == 2)
        assert running.process.pid not in listeners(http_port)
        for _ in range(10):
            answer = curl(http_port, "ListCustomers", {"storeId": 1})
            assert answer.status == 200


def test_with_tls_the_http_port_serves_https_with_the_same_certificate(tmp_path, env):
    authority = Authority(tmp_path)
    server_cert = authority.issue("server", server=True)
    trusting = grpc.ssl_channel_credentials(root_certificates=authority.pem)
    http_port = free_port()
    flags = (
        "--tls-cert-file", str(server_cert.cert),
        "--tls-key-file", str(server_cert.key),
        "--http-listen-address", f"127.0.0.1:{http_port}",
    )  # fmt: skip
    with running_server(tmp_path, env, *flags, credentials=trusting):
        ca_file = tmp_path / "ca.pem"
        ca_file.write_bytes(authority.pem)
        request = json.dumps({"storeId": 1})
        url = f"https://127.0.0.1:{http_port}/{CUSTOMERS}/ListCustomers"
        common = ["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--data-binary", request]
        common += ["-H", "content-type: application/json"]
        trusted = subprocess.run(
            [CURL or "curl", *common, "--cacert", str(ca_file), url],
            capture_output=True, text=True, check=False, timeout=60,
        )  # fmt: skip
        assert trusted.stdout == "200", trusted.stderr
        plaintext = subprocess.run(
            [CURL or "curl", *common, url.replace("https:", "http:")],
            capture_output=True, text=True, check=False, timeout=60,
        )  # fmt: skip
        assert plaintext.stdout != "200"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--http-listen-address", "nowhere"], "http_listen_address: must be host:port"),
        (
            ["--listen-address", "127.0.0.1:7001", "--http-listen-address", "127.0.0.1:7001"],
            "http_listen_address must differ from listen_address",
        ),
        (["--workers", "2", "--http-listen-address", "127.0.0.1:0"], "need a fixed port"),
    ],
)
def test_a_bad_http_address_is_a_one_line_error(flags, message):
    result = commerce("serve", *flags, env=clean_environment(), check=False)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_taken_http_port_is_a_one_line_error(tmp_path, env, workers):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        result = commerce(
            "serve",
            "--listen-address",
            f"127.0.0.1:{free_port()}",
            "--http-listen-address",
            address,
            "--workers",
            workers,
            env=env,
            check=False,
        )
    assert result.returncode == 2
    assert f"{address} is already in use" in result.stderr
    assert "(setting http_listen_address)" in result.stderr
    assert "Traceback" not in result.stderr
