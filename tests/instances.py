"""Private servers that fault tests stop and start: a PostgreSQL cluster of their own
(Debian's pg_createcluster, on its own port, never the shared one) and a NATS server
of their own (bench.broker)."""

from __future__ import annotations

import secrets
import shutil
import subprocess
from pathlib import Path

from bench.broker import PrivateNats, nats_server_available
from tests.process import free_port

__all__ = ["Cluster", "PrivateNats", "clusters_available", "nats_server_available"]


def clusters_available() -> bool:
    return shutil.which("pg_createcluster") is not None


class Cluster:
    """A PostgreSQL cluster of Debian's postgresql-common, trusting local callers."""

    def __init__(self) -> None:
        self.version = sorted(Path("/etc/postgresql").iterdir())[-1].name
        self.name = f"commerce_{secrets.token_hex(4)}"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _ctl(self, *args: str) -> None:
        subprocess.run(list(args), check=True, capture_output=True, timeout=120)

    def create(self) -> None:
        self._ctl(
            "pg_createcluster",
            self.version,
            self.name,
            "-p",
            str(self.port),
            "--start",
            "--",
            "--auth=trust",
        )

    def stop(self) -> None:
        self._ctl("pg_ctlcluster", self.version, self.name, "stop", "-m", "immediate")

    def start(self) -> None:
        self._ctl("pg_ctlcluster", self.version, self.name, "start")

    def drop(self) -> None:
        self._ctl("pg_dropcluster", self.version, self.name, "--stop")
