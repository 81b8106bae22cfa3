"""A private PostgreSQL primary and its streaming replica, for the read replica's
tests and benchmark: two clusters of Debian's postgresql-common on ports of their own
(never the shared one), the standby made with `pg_basebackup -R` from the primary.

The clusters have fixed names, so a run that died before dropping them does not
leave them behind for good: `create` drops leftovers of an earlier run first."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

__all__ = ["ReplicatedPair", "replication_available", "sql", "with_driver"]

# Where the pair's ports are looked for: above the ranges other private clusters of the
# tests take (tests.instances takes the system's free ports).
FIRST_PORT = 56200
LAST_PORT = 56299


def replication_available() -> bool:
    return shutil.which("pg_createcluster") is not None and Path("/usr/lib/postgresql").is_dir()


def _free_port(after: int = FIRST_PORT - 1) -> int:
    for port in range(after + 1, LAST_PORT + 1):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {FIRST_PORT}-{LAST_PORT}")


def _version() -> str:
    return sorted(Path("/etc/postgresql").iterdir())[-1].name


def _program(name: str) -> str:
    """A PostgreSQL program of the newest installed version, by its full path."""
    return f"/usr/lib/postgresql/{_version()}/bin/{name}"


def with_driver(url: str) -> str:
    """A plain postgresql:// URL as the server's engine takes it (asyncpg)."""
    return url.replace("postgresql://", "postgresql+asyncpg://", 1)


def _run(*args: str) -> None:
    subprocess.run(list(args), check=True, capture_output=True, timeout=180)  # noqa: S603 - ours


def sql(url: str, statement: str) -> str:
    """One statement through psql (no driver needed in the synchronous test code); its
    rows, one a line, columns separated by |."""
    return subprocess.run(  # noqa: S603 - our own statements, on our own clusters
        [_program("psql"), url, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", statement],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.strip()


class ReplicatedPair:
    """A primary and a hot standby streaming from it; `*_url` are plain postgresql://
    URLs (no driver), trusted for local callers."""

    def __init__(self, name: str = "commerce_replication") -> None:
        self.version = _version()
        self.primary_name = f"{name}_primary"
        self.standby_name = f"{name}_standby"
        self.primary_port = _free_port()
        self.standby_port = _free_port(self.primary_port)
        self.primary_url = f"postgresql://postgres@127.0.0.1:{self.primary_port}/postgres"
        self.standby_url = f"postgresql://postgres@127.0.0.1:{self.standby_port}/postgres"

    def create(self) -> None:
        self.drop()  # a run that died left them
        _run(
            "pg_createcluster",
            self.version,
            self.primary_name,
            "-p",
            str(self.primary_port),
            "--start",
            "--",
            "--auth=trust",  # local and 127.0.0.1, replication included
        )
        # The standby's configuration (pg_hba.conf, port) is Debian's, in /etc; its data
        # directory becomes a copy of the primary's that follows it (standby.signal).
        _run(
            "pg_createcluster",
            self.version,
            self.standby_name,
            "-p",
            str(self.standby_port),
            "--",
            "--auth=trust",
        )
        data = Path(f"/var/lib/postgresql/{self.version}/{self.standby_name}")
        for entry in data.iterdir():
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        # pg_basebackup writes as the user it runs as; the data must be postgres's.
        _run(
            "runuser",
            "-u",
            "postgres",
            "--",
            _program("pg_basebackup"),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.primary_port),
            "-U",
            "postgres",
            "-D",
            str(data),
            "-R",
            "-X",
            "stream",
            "-c",
            "fast",
        )
        self.start_standby()

    def drop(self) -> None:
        for name in (self.standby_name, self.primary_name):
            if Path(f"/etc/postgresql/{self.version}/{name}").exists():
                _run("pg_dropcluster", self.version, name, "--stop")

    def stop_standby(self) -> None:
        _run("pg_ctlcluster", self.version, self.standby_name, "stop", "-m", "immediate")

    def start_standby(self) -> None:
        _run("pg_ctlcluster", self.version, self.standby_name, "start")
        self.wait_until_streaming()

    def wait_until_streaming(self, timeout: float = 60.0) -> None:
        """Until the primary sees the standby streaming and the standby replayed all
        the primary had written by then."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                position = sql(
                    self.primary_url,
                    "SELECT pg_current_wal_lsn() FROM pg_stat_replication"
                    " WHERE state = 'streaming' LIMIT 1",
                )
                if position and self.replayed_past(position):
                    return
            except subprocess.CalledProcessError:
                pass  # starting up
            if time.monotonic() > deadline:
                raise TimeoutError("the standby did not start streaming")
            time.sleep(0.1)

    def replayed_past(self, lsn: str) -> bool:
        """Whether the standby applied the primary's WAL up to `lsn` (a pg_lsn)."""
        return sql(self.standby_url, f"SELECT pg_last_wal_replay_lsn() >= '{lsn}'") == "t"

    def caught_up(self) -> bool:
        """Whether the standby applied all the primary has written so far."""
        return self.replayed_past(sql(self.primary_url, "SELECT pg_current_wal_lsn()"))

    def pause_replay(self) -> None:
        """The standby keeps receiving WAL but applies none of it."""
        sql(self.standby_url, "SELECT pg_wal_replay_pause()")

    def resume_replay(self) -> None:
        sql(self.standby_url, "SELECT pg_wal_replay_resume()")
