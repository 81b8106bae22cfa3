"""The three servers a benchmark run compares, each started as its own process on the
same database: the suite (`commerce serve`), the bare baseline and the REST peer."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
from commerce.customers.v1 import customer_service_pb2 as customers_pb
from commerce.customers.v1 import customer_service_pb2_grpc as customers_grpc

ROOT = Path(__file__).resolve().parent.parent
COMMERCE = str(Path(sys.executable).with_name("commerce"))
PAGE_TOKEN_SECRET = "bench-page-token-secret"  # noqa: S105 - a benchmark's, not a secret


@dataclass(frozen=True)
class Running:
    name: str
    pid: int
    port: int

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _grpc_answers(port: int, store_id: int, customer_id: int) -> bool:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            customers_grpc.CustomerServiceStub(channel).GetCustomer(
                customers_pb.GetCustomerRequest(store_id=store_id, customer_id=customer_id),
                timeout=2,
            )
        except grpc.RpcError:
            return False
    return True


def _http_answers(port: int, store_id: int, customer_id: int) -> bool:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/store/customers/{customer_id}",
        headers={"X-Store-Id": str(store_id)},
    )
    try:
        with urllib.request.urlopen(request, timeout=2) as response:  # noqa: S310
            return bool(response.status == 200)
    except OSError:
        return False


@contextmanager
def _process(
    name: str,
    command: list[str],
    env: dict[str, str],
    port: int,
    ready: Callable[[int], bool],
    log_dir: Path,
) -> Iterator[Running]:
    log = log_dir / f"{name}.log"
    with log.open("w") as sink:
        process = subprocess.Popen(  # noqa: S603 - our own commands
            command, env=env, cwd=ROOT, stdout=sink, stderr=sink
        )
    try:
        deadline = time.monotonic() + 60
        while not ready(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start; its log:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield Running(name, process.pid, port)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def environment(**settings: str) -> dict[str, str]:
    """This environment without any commerce setting, plus `settings`."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("COMMERCE_")}
    return env | settings


@contextmanager
def suite(
    database_url: str,
    probe: tuple[int, int],
    log_dir: Path,
    *,
    bcrypt_rounds: int,
    workers: int = 1,
    name: str = "",
    settings: Mapping[str, str] | None = None,
) -> Iterator[Running]:
    """`commerce serve` with its production defaults (log level INFO: a line per RPC),
    and `settings` (environment variables, COMMERCE_...) on top."""
    port = free_port()
    env = environment(
        DATABASE_URL=database_url,
        COMMERCE_PAGE_TOKEN_SECRET=PAGE_TOKEN_SECRET,
        COMMERCE_WORKERS=str(workers),
        COMMERCE_BCRYPT_ROUNDS=str(bcrypt_rounds),
        **(settings or {}),
    )
    command = [COMMERCE, "serve", "--listen-address", f"127.0.0.1:{port}"]
    with _process(
        name or f"suite-{workers}w",
        command,
        env,
        port,
        lambda p: _grpc_answers(p, *probe),
        log_dir,
    ) as running:
        yield running


@contextmanager
def baseline(
    database_url: str, probe: tuple[int, int], log_dir: Path, *, bcrypt_rounds: int
) -> Iterator[Running]:
    port = free_port()
    command = [sys.executable, "-m", "bench.baseline", "--database-url", database_url]
    command += ["--listen-address", f"127.0.0.1:{port}", "--page-token-secret", PAGE_TOKEN_SECRET]
    command += ["--bcrypt-rounds", str(bcrypt_rounds)]
    with _process(
        "baseline", command, environment(), port, lambda p: _grpc_answers(p, *probe), log_dir
    ) as running:
        yield running


@contextmanager
def rest_peer(database_url: str, probe: tuple[int, int], log_dir: Path) -> Iterator[Running]:
    port = free_port()
    command = [sys.executable, "-m", "bench.rest_peer", "--database-url", database_url]
    command += ["--port", str(port)]
    with _process(
        "rest-peer", command, environment(), port, lambda p: _http_answers(p, *probe), log_dir
    ) as running:
        yield running
