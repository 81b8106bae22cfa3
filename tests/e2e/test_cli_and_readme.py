"""The `commerce` command as a user runs it, and the README's grpcurl session, run
line by line against a server started the way the README says."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMMERCE = [str(Path(sys.executable).parent / "commerce")]  # the installed entry point
GRPCURL = Path(sys.executable).parent / "grpcurl"


def commerce(
    *args: str, env: dict[str, str], check: bool = True
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COMMERCE, *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=check,
    )


@pytest.fixture
def sqlite_env(tmp_path: Path) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("COMMERCE_") and k != "DATABASE_URL"
    }
    env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'cli.db'}"
    env["COMMERCE_BCRYPT_ROUNDS"] = "4"
    return env


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
def running_server(sqlite_env, tmp_path) -> Iterator[tuple[subprocess.Popen[str], int]]:
    commerce("migrate", env=sqlite_env)
    commerce("stores", "create", "--name", "Demo store", env=sqlite_env)
    log = (tmp_path / "server.log").open("w+")
    process = subprocess.Popen(
        [*COMMERCE, "serve", "--listen-address", "127.0.0.1:0"],
        env=sqlite_env,
        cwd=ROOT,
        stdout=log,
        stderr=log,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not (match := re.search(r"on port (\d+)", Path(log.name).read_text())):
            assert process.poll() is None, Path(log.name).read_text()
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.1)
        yield process, int(match.group(1))
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


def readme_grpcurl_commands() -> list[list[str]]:
    """The `$G ...` commands of the README, with their line continuations joined."""
    text = (ROOT / "README.md").read_text().replace("\\\n", " ")
    return [shlex.split(line)[1:] for line in text.splitlines() if line.startswith("$G ")]


def test_readme_grpcurl_session_works_by_copy_paste(running_server):
    _, port = running_server
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
    from commerce.customers.v1 import customer_service_pb2

    service = customer_service_pb2.DESCRIPTOR.services_by_name["CustomerService"]
    assert shown == {method.name for method in service.methods}


def test_sigterm_stops_the_server_cleanly(running_server):
    process, _ = running_server
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0
