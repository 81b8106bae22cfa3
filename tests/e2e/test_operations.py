"""`commerce serve` as an operator runs it: flags, mounting, logs, metrics, signals,
workers and TLS. Each test starts the real entry point as a subprocess."""

from __future__ import annotations

import contextlib
import json
import re
import signal
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from commerce.customers.v1 import customer_service_pb2_grpc
from grpc_health.v1 import health_pb2

from services.core.settings import Settings, env_name
from tests.e2e.helpers import PASSWORD, pb
from tests.process import (
    clean_environment,
    commerce,
    free_port,
    grpcurl,
    health_status,
    listeners,
    migrated_sqlite_env,
    running_server,
    wait_for,
)

SERVING = health_pb2.HealthCheckResponse.SERVING


@pytest.fixture
def sqlite_env(tmp_path: Path) -> dict[str, str]:
    return migrated_sqlite_env(tmp_path, "Ops")


def stub(target: str) -> customer_service_pb2_grpc.CustomerServiceStub:
    return customer_service_pb2_grpc.CustomerServiceStub(grpc.insecure_channel(target))


def test_help_documents_every_setting():
    text = " ".join(commerce("serve", "--help", env=clean_environment()).stdout.split())
    for name in Settings.model_fields:
        if name in ("page_token_secret", "database_url"):
            continue  # secrets never go on a command line
        assert f"--{name.replace('_', '-')}" in text
        assert env_name(name) in text


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--workers", "0"], "bad setting workers"),
        (["--log-format", "xml"], "bad setting log_format"),
        (["--listen-address", "nowhere"], "bad setting listen_address: must be host:port"),
        (["--tls-cert-file", "/no/such.pem", "--tls-key-file", "/no/such.key"], "no such file"),
        (["--workers", "2", "--listen-address", "127.0.0.1:0"], "need a fixed port"),
        (["--services", "customers,warehouse"], "unknown module(s) warehouse"),
        (["--db-pool-size", "many"], "bad setting db_pool_size"),
    ],
)
def test_a_bad_setting_is_a_one_line_error(flags, message):
    result = commerce("serve", *flags, env=clean_environment(), check=False)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 2  # usage line + the error


def test_settings_come_from_the_environment(tmp_path, sqlite_env):
    env = sqlite_env | {"COMMERCE_LOG_FORMAT": "json"}
    with running_server(tmp_path, env) as server:
        stub(server.target).ListCustomers(pb.ListCustomersRequest(store_id=1), timeout=10)
        server.process.send_signal(signal.SIGTERM)
        server.process.wait(timeout=30)
    lines = server.output().splitlines()
    assert any(json.loads(line).get("grpc_code") == "OK" for line in lines)


def test_one_log_line_per_rpc_without_secrets(tmp_path, sqlite_env):
    with running_server(tmp_path, sqlite_env, "--log-format", "json") as server:
        customers = stub(server.target)
        email = "secret.person@example.com"
        customers.CreateCustomer(
            pb.CreateCustomerRequest(store_id=1, email=email, password=PASSWORD), timeout=10
        )
        customers.AuthenticateCustomer(
            pb.AuthenticateCustomerRequest(store_id=1, email=email, password=PASSWORD), timeout=10
        )
        with pytest.raises(grpc.RpcError):
            customers.GetCustomer(pb.GetCustomerRequest(store_id=1, customer_id=404), timeout=10)
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=30) == 0
    records = [json.loads(line) for line in server.output().splitlines()]
    rpcs = [r for r in records if r["logger"] == "commerce.rpc"]
    assert [(r["grpc_method"].rsplit("/", 1)[1], r["store_id"], r["grpc_code"]) for r in rpcs] == [
        ("CreateCustomer", 1, "OK"),
        ("AuthenticateCustomer", 1, "OK"),
        ("GetCustomer", 1, "NOT_FOUND"),
    ]
    assert all(r["duration_ms"] >= 0 for r in rpcs)
    assert [r.get("resource_name") for r in rpcs] == [None, None, "stores/1/customers/404"]
    everything = server.output()
    assert PASSWORD not in everything
    assert "secret.person" not in everything
    assert "$2b$" not in everything


def test_the_lines_per_rpc_survive_sigterm_whole_and_in_order(tmp_path, sqlite_env):
    """The lines per RPC are written in batches (services.core.logs): each still
    shows while the server runs, and a SIGTERM right after a burst of calls loses none
    of them nor changes their order, before the shutdown's own line. (Calls that
    succeed: a failed call's line is written just after its status is sent.)"""
    with running_server(tmp_path, sqlite_env) as server:
        customers = stub(server.target)
        created = customers.CreateCustomer(
            pb.CreateCustomerRequest(store_id=1, email="burst@example.com"), timeout=10
        ).customer
        wait_for(lambda: "CustomerService/CreateCustomer store_id=1 code=OK" in server.output())
        burst = ["GetCustomer", "ListCustomers", "GetCustomer"] * 100
        for method in burst:
            if method == "GetCustomer":
                customers.GetCustomer(
                    pb.GetCustomerRequest(store_id=1, customer_id=created.customer_id), timeout=10
                )
            else:
                customers.ListCustomers(pb.ListCustomersRequest(store_id=1), timeout=10)
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=30) == 0
    lines = server.output().splitlines()
    calls = [re.search(r"CustomerService/(\w+) store_id=1 code=OK", line) for line in lines]
    assert [call[1] for call in calls if call] == ["CreateCustomer", *burst]
    last_call = max(index for index, call in enumerate(calls) if call)
    assert "shutting down" in "".join(lines[last_call + 1 :])


def test_no_secret_reaches_any_log_line_even_at_debug(tmp_path, sqlite_env):
    """Every password-bearing RPC, succeeding and failing in every way it can, with
    the server logging at DEBUG: no line holds a password or a bcrypt hash."""
    first, second, wrong, short, long = "first pw 1", "second pw 2", "wrong pw 3", "tiny", "ü" * 40
    email = "debug.person@example.com"
    requests = [
        ("CreateCustomer", pb.CreateCustomerRequest(email=email, password=first)),
        ("CreateCustomer", pb.CreateCustomerRequest(email="b" + email, password=short)),
        ("CreateCustomer", pb.CreateCustomerRequest(email="c" + email, password=long)),
    ]
    for guess in (first, wrong, long):
        for login in (email, "nobody@example.com"):
            request = pb.AuthenticateCustomerRequest(email=login, password=guess)
            requests.append(("AuthenticateCustomer", request))
    for current, new in ((wrong, second), (first, short), (first, second)):
        request = pb.ChangeCustomerPasswordRequest(
            customer_id=1, current_password=current, new_password=new
        )
        requests.append(("ChangeCustomerPassword", request))
    with running_server(tmp_path, sqlite_env, "--log-level", "debug") as server:
        customers = stub(server.target)
        for method, request in requests:
            request.store_id = 1
            with contextlib.suppress(grpc.RpcError):
                getattr(customers, method)(request, timeout=10)
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=30) == 0
    log = server.output()
    assert log.count("commerce.rpc") == len(requests)  # it logged, at DEBUG
    for secret in (first, second, wrong, short, long):
        assert secret not in log
    assert re.search(r"\$2[aby]?\$\d\d\$", log) is None  # no bcrypt hash


def test_metrics_count_calls_by_method_and_code(tmp_path, sqlite_env):
    metrics_port = free_port()
    with running_server(
        tmp_path, sqlite_env, "--metrics-address", f"127.0.0.1:{metrics_port}"
    ) as server:
        customers = stub(server.target)
        for _ in range(3):
            with pytest.raises(grpc.RpcError):
                customers.GetCustomer(
                    pb.GetCustomerRequest(store_id=1, customer_id=404), timeout=10
                )
        customers.ListCustomers(pb.ListCustomersRequest(store_id=1), timeout=10)
        scraped = (
            urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10)
            .read()
            .decode()
        )
    assert (
        _metric(
            scraped, "grpc_server_handled_total", grpc_method="GetCustomer", grpc_code="NOT_FOUND"
        )
        == 3
    )
    assert (
        _metric(scraped, "grpc_server_handled_total", grpc_method="ListCustomers", grpc_code="OK")
        == 1
    )
    assert _metric(scraped, "grpc_server_handling_seconds_count", grpc_method="GetCustomer") == 3
    assert (
        _metric(
            scraped, "grpc_server_in_flight", grpc_service="commerce.customers.v1.CustomerService"
        )
        == 0
    )


def _metric(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
        if all(found.get(key) == value for key, value in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name} {labels}")


def test_sigterm_lets_accepted_calls_finish(tmp_path, sqlite_env):
    """A steady stream of slow calls (bcrypt cost 12); SIGTERM in the middle. Every
    call sent well before the signal succeeds; the server exits 0."""
    env = sqlite_env | {"COMMERCE_BCRYPT_ROUNDS": "12"}
    with running_server(tmp_path, env, "--grace-seconds", "20") as server:
        channel = grpc.insecure_channel(server.target)
        customers = customer_service_pb2_grpc.CustomerServiceStub(channel)
        customers.CreateCustomer(
            pb.CreateCustomerRequest(store_id=1, email="s@example.com", password=PASSWORD)
        )
        login = pb.AuthenticateCustomerRequest(store_id=1, email="s@example.com", password=PASSWORD)
        outcomes: list[tuple[float, float, bool]] = []
        stop = threading.Event()

        def caller() -> None:
            while not stop.is_set():
                sent = time.monotonic()
                try:
                    customers.AuthenticateCustomer(login, timeout=30)
                    ok = True
                except grpc.RpcError:
                    ok = False
                outcomes.append((sent, time.monotonic(), ok))

        threads = [threading.Thread(target=caller) for _ in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(1.5)
        signalled = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        exit_code = server.process.wait(timeout=60)
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
        channel.close()
    accepted = [(finished, ok) for sent, finished, ok in outcomes if sent < signalled - 0.1]
    assert len(accepted) >= 4
    failed = [finished for finished, ok in accepted if not ok]
    assert failed == [], f"{len(failed)} of {len(accepted)} accepted calls failed"
    # Some of them were still running when the signal came: the drain was real.
    assert any(finished > signalled for finished, _ in accepted)
    assert exit_code == 0


def test_two_workers_share_one_port(tmp_path, sqlite_env):
    with running_server(tmp_path, sqlite_env, "--workers", "2") as server:
        wait_for(lambda: len(listeners(server.port)) == 2)
        workers = listeners(server.port)
        assert server.process.pid not in workers  # the parent only supervises
        for _ in range(20):  # fresh connections, spread by the kernel over both
            with grpc.insecure_channel(server.target) as channel:
                customer_service_pb2_grpc.CustomerServiceStub(channel).ListCustomers(
                    pb.ListCustomersRequest(store_id=1), timeout=10
                )
        # A worker that dies is replaced.
        victim = min(workers)
        subprocess.run(["kill", "-9", str(victim)], check=True)  # noqa: S607

        def replaced() -> bool:
            # One look at the listeners: two looks could each see half of the change.
            current = listeners(server.port)
            return len(current) == 2 and victim not in current

        wait_for(replaced)
        assert "exited with -9; restarting it" in server.output()
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=60) == 0
        assert listeners(server.port) == set()


def test_workers_stop_when_the_supervisor_is_killed(tmp_path, sqlite_env):
    """A supervisor killed outright (SIGKILL, the OOM killer) leaves no orphaned worker
    holding the port and its database connections."""
    with running_server(tmp_path, sqlite_env, "--workers", "2") as server:
        wait_for(lambda: len(listeners(server.port)) == 2)
        server.process.kill()
        server.process.wait()
        wait_for(lambda: listeners(server.port) == set())
    assert server.output().count("services.server shutting down") == 2  # both drained


def plaintext_grpcurl(*args: str) -> str:
    return grpcurl("-plaintext", *args).stdout


def test_only_the_named_modules_are_mounted(tmp_path, sqlite_env):
    with running_server(tmp_path, sqlite_env, "--services", "customers") as server:
        listed = plaintext_grpcurl(server.target, "list").split()
        assert health_status(server.port, "commerce.customers.v1.CustomerService") == SERVING
    assert sorted(listed) == [
        "commerce.customers.v1.CustomerService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    ]


def test_orders_alone_describes_the_customers_messages_it_embeds(tmp_path, sqlite_env):
    """Reflection serves the customers protos that orders imports even when the
    customers service is not mounted, so grpcurl can describe and decode orders."""
    with running_server(tmp_path, sqlite_env, "--services", "orders") as server:
        listed = plaintext_grpcurl(server.target, "list").split()
        order = plaintext_grpcurl(server.target, "describe", "commerce.orders.v1.Order")
        customer = plaintext_grpcurl(server.target, "describe", "commerce.customers.v1.Customer")
        placed = json.loads(
            plaintext_grpcurl(
                "-d",
                '{"store_id": 1, "currency_code": "EUR", "line_items": '
                '[{"sku": "A-1", "name": "A", "quantity": 2, "unit_price_minor": 150}]}',
                server.target,
                "commerce.orders.v1.OrderService/CreateOrder",
            )
        )
    assert "commerce.customers.v1.CustomerService" not in listed
    assert "commerce.orders.v1.OrderService" in listed
    assert ".commerce.customers.v1.Customer customer = 5 " in order
    assert "string email = 4 " in customer
    assert placed["order"]["total_minor"] == "300"


def test_health_command_probes_a_running_server(tmp_path, sqlite_env):
    with running_server(tmp_path, sqlite_env) as server:
        result = commerce("health", "--address", server.target, env=sqlite_env, check=False)
        assert (result.returncode, result.stdout.strip()) == (0, "SERVING")
        service = ("--service", "commerce.customers.v1.CustomerService")
        named = commerce(
            "health", "--address", server.target, *service, env=sqlite_env, check=False
        )
        assert named.returncode == 0
        unknown = commerce(
            "health", "--address", server.target, "--service", "nope", env=sqlite_env, check=False
        )
        assert unknown.returncode == 1
    down = commerce(
        "health", "--address", server.target, "--timeout", "1", env=sqlite_env, check=False
    )
    assert down.returncode == 1
    assert "UNAVAILABLE" in down.stderr
