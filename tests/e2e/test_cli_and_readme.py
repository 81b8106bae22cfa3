"""The `commerce` command as a user runs it, and the README's grpcurl session, run
line by line against a server started the way the README says."""

from __future__ import annotations

import json
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from commerce.customers.v1 import customer_service_pb2
from commerce.events.v1 import event_service_pb2
from commerce.loyalty.v1 import customer_loyalty_service_pb2
from commerce.orders.v1 import customer_order_service_pb2, order_service_pb2
from google.protobuf import descriptor_pool, json_format, message_factory
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2  # noqa: F401  (the printed error's types)

from tests.process import (
    GRPCURL,
    ROOT,
    ServerProcess,
    clean_environment,
    commerce,
    free_port,
    migrated_sqlite_env,
    running_server,
)


@pytest.fixture
def sqlite_env(tmp_path: Path) -> dict[str, str]:
    """An empty SQLite database, not yet migrated."""
    return clean_environment(DATABASE_URL=f"sqlite:///{tmp_path / 'cli.db'}")


def test_bad_setting_is_a_one_line_error(sqlite_env):
    result = commerce("--database-url", "nonsense", "migrate", env=sqlite_env, check=False)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        "commerce migrate: error: bad setting COMMERCE_DATABASE_URL: "
        "must look like postgresql://user@host/db or sqlite:///file.db"
    )
    assert "Traceback" not in result.stderr


def test_store_administration(sqlite_env):
    commerce("migrate", env=sqlite_env)
    assert (
        commerce("stores", "create", "--name", "First", env=sqlite_env).stdout.strip()
        == "created store 1 (First)"
    )
    commerce("stores", "create", "--name", "Second", env=sqlite_env)
    commerce("stores", "deactivate", "2", env=sqlite_env)
    listing = commerce("stores", "list", env=sqlite_env).stdout.splitlines()
    assert listing == ["1\tactive\tFirst", "2\tinactive\tSecond"]
    missing = commerce("stores", "activate", "9", env=sqlite_env, check=False)
    assert (missing.returncode, missing.stderr.strip()) == (1, "error: store 9 not found")


def documented_commerce_commands(document: str, section: str) -> list[tuple[list[str], str | None]]:
    """The `.venv/bin/commerce ...` lines of a document's section (from its `## `
    heading to the next), in order, each with the output its `# prints:` comment
    promises (None without one)."""
    text = (ROOT / document).read_text()
    body = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    commands = []
    for line in body.splitlines():
        if line.startswith(".venv/bin/commerce "):
            command, _, comment = line.partition("#")
            comment = comment.strip()
            promised = (
                comment.removeprefix("prints:").strip() if comment.startswith("prints:") else None
            )
            commands.append((shlex.split(command)[1:], promised))
    assert commands, f"no commerce command in {document}'s {section}"
    return commands


def run_documented_commands(document: str, section: str, env: dict[str, str]) -> None:
    for args, promised in documented_commerce_commands(document, section):
        printed = commerce(*args, env=env).stdout.strip()
        if promised is not None:
            # The README writes a tab as the text shows it.
            assert " ".join(printed.split()) == " ".join(promised.split()), (args, printed)


@pytest.fixture
def fresh_server(tmp_path: Path) -> Iterator[tuple[ServerProcess, dict[str, str]]]:
    """A server on a new, migrated and empty database (what `scripts/serve` makes)."""
    env = clean_environment(DATABASE_URL=f"sqlite:///{tmp_path / 'commerce.db'}")
    commerce("migrate", env=env)
    with running_server(tmp_path, env) as server:
        yield server, env


@pytest.fixture
def demo_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A server on a fresh database with store 1, as the README sets one up."""
    with running_server(tmp_path, migrated_sqlite_env(tmp_path, "Demo store")) as server:
        yield server


def test_readme_flow_in_order_by_copy_paste(fresh_server):
    """The README as a newcomer follows it: its stores block, then its grpcurl tour,
    on the same database. Then the API guide's session there fails as the guide warns
    (a used database), and works after the guide's start-fresh steps."""
    server, env = fresh_server
    run_documented_commands("README.md", "Stores", env)
    outputs = run_session("README.md", server.port)
    stats = json.loads(outputs["commerce.orders.v1.CustomerOrderService/GetCustomerOrderStats"])
    spent = [{"currency_code": "EUR", "amount_minor": "2598"}]
    assert stats["stats"]["total_spent_per_currency"] == spent
    assert stats["stats"]["total_spent"] == spent  # deprecated, filled until v2
    assert "EMAIL_TAKEN" in run_session_once("docs/api.md", server.port)


API_SESSION_SECTION = "Every RPC with grpcurl"


def test_api_guide_after_its_start_fresh_steps(fresh_server):
    server, env = fresh_server
    run_documented_commands("docs/api.md", API_SESSION_SECTION, env)
    run_session("docs/api.md", server.port)


def documented_grpcurl_session(document: str) -> list[tuple[list[str], bool]]:
    """The `$G ...` commands of a document, with their line continuations joined, each
    with whether it is shown failing (`|| true`)."""
    text = (ROOT / document).read_text().replace("\\\n", " ")
    session = []
    for line in text.splitlines():
        if line.startswith("$G "):
            command, _, fallback = line.partition(" || ")
            session.append((shlex.split(command)[1:], fallback == "true"))
    return session


def run_session(document: str, port: int) -> dict[str, str]:
    """Runs a document's grpcurl session in order; the output of each call by method."""
    outputs = {}
    for args, fails in documented_grpcurl_session(document):
        args = [arg.replace("localhost:50051", f"127.0.0.1:{port}") for arg in args]
        result = subprocess.run(
            [GRPCURL, "-plaintext", *args], capture_output=True, text=True, timeout=30, check=False
        )
        shown = f"{document}: grpcurl {shlex.join(args)}\n{result.stdout}{result.stderr}"
        assert (result.returncode != 0) == fails, shown
        outputs[args[-1]] = result.stderr if fails else result.stdout
    return outputs


def run_session_once(document: str, port: int) -> str:
    """Runs a document's session until its first call that fails unexpectedly; that
    call's error output ("" when none failed)."""
    for args, fails in documented_grpcurl_session(document):
        args = [arg.replace("localhost:50051", f"127.0.0.1:{port}") for arg in args]
        result = subprocess.run(
            [GRPCURL, "-plaintext", *args], capture_output=True, text=True, timeout=30, check=False
        )
        if (result.returncode != 0) != fails:
            return result.stderr
    return ""


def printed_answers(document: str, section: str) -> dict[str, Message]:
    """The ```json blocks of a document's section, each parsed as the message its
    info string names (```json google.rpc.Status), by that name."""
    text = (ROOT / document).read_text()
    body = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    answers = {}
    for type_name, block in re.findall(r"```json (\S+)\n(.*?)```", body, re.DOTALL):
        assert type_name not in answers, f"two {type_name} answers in {section}"
        answers[type_name] = parsed(type_name, block)
    return answers


def parsed(type_name: str, text: str) -> Message:
    """JSON as grpcurl prints it (proto field names) or canonical (lowerCamelCase): the
    same message either way."""
    descriptor = descriptor_pool.Default().FindMessageTypeByName(type_name)
    message = message_factory.GetMessageClass(descriptor)()
    json_format.Parse(text, message)
    return message


def test_readme_grpcurl_tour_works_by_copy_paste(demo_server):
    outputs = run_session("README.md", demo_server.port)
    stats = json.loads(outputs["commerce.orders.v1.CustomerOrderService/GetCustomerOrderStats"])
    spent = [{"currency_code": "EUR", "amount_minor": "2598"}]
    assert stats["stats"]["total_spent_per_currency"] == spent
    assert stats["stats"]["total_spent"] == spent  # deprecated, filled until v2


def test_api_guide_shows_every_rpc_and_works_by_copy_paste(demo_server):
    session = documented_grpcurl_session("docs/api.md")
    shown = {
        match.groups()
        for args, _ in session
        if (match := re.search(r"(commerce\.\w+\.v1\.\w+)/(\w+)", " ".join(args)))
    }
    services = [
        customer_service_pb2.DESCRIPTOR.services_by_name["CustomerService"],
        order_service_pb2.DESCRIPTOR.services_by_name["OrderService"],
        customer_order_service_pb2.DESCRIPTOR.services_by_name["CustomerOrderService"],
        customer_loyalty_service_pb2.DESCRIPTOR.services_by_name["CustomerLoyaltyService"],
        event_service_pb2.DESCRIPTOR.services_by_name["EventService"],
    ]
    assert shown == {(s.full_name, method.name) for s in services for method in s.methods}

    outputs = run_session("docs/api.md", demo_server.port)
    # The answers the guide prints are the ones its session produces.
    printed = printed_answers("docs/api.md", API_SESSION_SECTION)
    stats_type = "commerce.orders.v1.GetCustomerOrderStatsResponse"
    printed_stats = printed[stats_type]
    stats = parsed(
        stats_type, outputs["commerce.orders.v1.CustomerOrderService/GetCustomerOrderStats"]
    )
    for timestamp in ("first_order_time", "last_order_time"):
        assert stats.stats.HasField(timestamp)
        assert printed_stats.stats.HasField(timestamp)
        stats.stats.ClearField(timestamp)
        printed_stats.stats.ClearField(timestamp)
    assert stats == printed_stats
    error = parsed(
        "google.rpc.Status", outputs["commerce.customers.v1.CustomerService/GetCustomer"]
    )
    # As dicts: the details are Any, whose packed bytes need not order a map alike.
    assert json_format.MessageToDict(error) == json_format.MessageToDict(
        printed["google.rpc.Status"]
    )


def test_sigterm_stops_the_server_cleanly(demo_server):
    process = demo_server.process
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0


WALKTHROUGH = str(ROOT / "clients" / "python" / "walkthrough.py")


def test_python_walkthrough_explains_its_arguments():
    bare = subprocess.run(
        [sys.executable, WALKTHROUGH], capture_output=True, text=True, timeout=60, check=False
    )
    assert bare.returncode == 2
    assert "Traceback" not in bare.stderr
    assert bare.stderr.startswith("usage: walkthrough.py [-h] target store_id")
    helped = subprocess.run(
        [sys.executable, WALKTHROUGH, "--help"], capture_output=True, text=True, timeout=60
    )
    assert "127.0.0.1:50051" in helped.stdout


def test_python_walkthrough_names_a_server_it_cannot_reach():
    target = f"127.0.0.1:{free_port()}"
    result = subprocess.run(
        [sys.executable, WALKTHROUGH, target, "1"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: no gRPC server answers at {target}"
