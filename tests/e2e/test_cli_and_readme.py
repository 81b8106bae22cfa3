"""The `commerce` command as a user runs it, and the README's grpcurl session, run
line by line against a server started the way the README says."""

from __future__ import annotations

import re
import shlex
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from commerce.customers.v1 import customer_service_pb2

from tests.process import (
    COMMERCE,
    ROOT,
    ServerProcess,
    clean_environment,
    commerce,
    migrated_sqlite_env,
    running_server,
)

GRPCURL = Path(COMMERCE).parent / "grpcurl"


@pytest.fixture
def sqlite_env(tmp_path: Path) -> dict[str, str]:
    """An empty SQLite database, not yet migrated."""
    return clean_environment(DATABASE_URL=f"sqlite:///{tmp_path / 'cli.db'}")


def test_bad_setting_is_a_one_line_error(sqlite_env):
    result = commerce("--database-url", "nonsense", "migrate", env=sqlite_env, check=False)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        "commerce: error: bad setting COMMERCE_DATABASE_URL: "
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


@pytest.fixture
def demo_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A server on a fresh database with store 1, as the README sets one up."""
    with running_server(tmp_path, migrated_sqlite_env(tmp_path, "Demo store")) as server:
        yield server


def readme_grpcurl_commands() -> list[list[str]]:
    """The `$G ...` commands of the README, with their line continuations joined."""
    text = (ROOT / "README.md").read_text().replace("\\\n", " ")
    return [shlex.split(line)[1:] for line in text.splitlines() if line.startswith("$G ")]


def test_readme_grpcurl_session_works_by_copy_paste(demo_server):
    port = demo_server.port
    commands = readme_grpcurl_commands()
    assert len(commands) >= 13
    for args in commands:
        args = [arg.replace("localhost:50051", f"127.0.0.1:{port}") for arg in args]
        result = subprocess.run(
            [str(GRPCURL), "-plaintext", *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert result.returncode == 0, f"grpcurl {shlex.join(args)}\n{result.stdout}{result.stderr}"
    # Every RPC of CustomerService is shown in the README.
    shown = {
        re.search(r"CustomerService/(\w+)", " ".join(a)).group(1)
        for a in commands
        if "CustomerService/" in " ".join(a)
    }
    service = customer_service_pb2.DESCRIPTOR.services_by_name["CustomerService"]
    assert shown == {method.name for method in service.methods}


def test_sigterm_stops_the_server_cleanly(demo_server):
    process = demo_server.process
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0
