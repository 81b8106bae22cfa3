"""A private NATS server with JetStream, on its own port and its own store folder: the
event benchmarks and the fault tests stop and start it, and never touch a shared one."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import nats
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy

NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"


def nats_server_available() -> bool:
    return Path(NATS_SERVER).exists()


async def ordered_subscription(
    stream: JetStreamContext, subjects: str, deadline: float
) -> Any | None:
    """An ordered consumer of every message on `subjects`, from the first; None if the
    stream still does not exist at `deadline` (time.monotonic()): the server creates
    it when it first publishes."""
    while True:
        try:
            return await stream.subscribe(
                subjects, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL
            )
        except nats.js.errors.NotFoundError:
            if time.monotonic() > deadline:
                return None
            await asyncio.sleep(0.05)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PrivateNats:
    """`nats-server -js` on a free loopback port, its streams kept in `directory`, so
    they outlive a restart of the server."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = _free_port()
        self.log = directory / "nats-server.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 60) -> None:
        command = [NATS_SERVER, "-js", "-a", "127.0.0.1", "-p", str(self.port)]
        command += ["-sd", str(self.directory / "store")]
        with self.log.open("ab") as sink:
            self._process = subprocess.Popen(  # noqa: S603 - our own arguments
                command, stdout=sink, stderr=sink
            )
        deadline = time.monotonic() + timeout
        while not self._answers():
            if self._process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"nats-server did not start:\n{self.log.read_text()[-2000:]}")
            time.sleep(0.05)

    def _answers(self) -> bool:
        """The server greets every client with its INFO line once it listens."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as connection:
                return connection.recv(4).startswith(b"INFO")
        except OSError:
            return False

    def stop(self) -> None:
        """Stops it the way an operator does (SIGTERM, then SIGKILL if it hangs)."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
