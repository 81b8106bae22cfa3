"""A private PgBouncer in transaction pool mode, on its own port and with its own
configuration in a folder of its own, in front of a PostgreSQL server: the PgBouncer
benchmark, its tests and `scripts/test-pgbouncer` start one and never touch a
system-wide PgBouncer.

`python -m bench.pooler --port N [--pool-size N]` runs one in the foreground until
SIGTERM or SIGINT (scripts/start-pgbouncer)."""

from __future__ import annotations

import argparse
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import FrameType

from sqlalchemy.engine import make_url

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
# PgBouncer refuses to run as root; started by root it runs as this user.
RUN_AS = "postgres"


def pgbouncer_available() -> bool:
    return Path(PGBOUNCER).exists()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def config_text(
    *,
    port: int,
    server_host: str,
    server_port: int,
    pool_size: int,
    directory: Path,
    ignored: tuple[str, ...] = (),
) -> str:
    """pgbouncer.ini: every database of the server under its own name (`*`), lent a
    transaction at a time, `pool_size` server connections per database and user.
    Clients are trusted (a local test server's way), as users.txt names them.
    Startup parameters `ignored` are dropped (PgBouncer refuses unknown ones)."""
    return f"""\
[databases]
* = host={server_host} port={server_port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {directory / "users.txt"}
pool_mode = transaction
default_pool_size = {pool_size}
min_pool_size = 0
reserve_pool_size = 0
max_client_conn = 1000
max_db_connections = 0
server_reset_query =
log_connections = 0
log_disconnections = 0
ignore_startup_parameters = {",".join(("extra_float_digits", *ignored))}
logfile = {directory / "pgbouncer.log"}
pidfile = {directory / "pgbouncer.pid"}
"""


class PrivatePgBouncer:
    """PgBouncer on `port` (default: a free one) in front of the PostgreSQL server of
    `server_url` (its host and port; each client names its database and user)."""

    def __init__(
        self,
        server_url: str = "postgresql://postgres@127.0.0.1:5432/test",
        *,
        port: int | None = None,
        pool_size: int = 4,
        ignored: tuple[str, ...] = (),
    ) -> None:
        # A folder of its own in the system's temporary one, which the user it runs
        # as can reach (a test's tmp_path may be in a folder only root may enter).
        self.directory = Path(tempfile.mkdtemp(prefix="pgbouncer-"))
        self.port = port or _free_port()
        self.pool_size = pool_size
        server = make_url(server_url)
        self.config = self.directory / "pgbouncer.ini"
        self.log = self.directory / "pgbouncer.log"
        self.config.write_text(
            config_text(
                port=self.port,
                server_host=server.host or "127.0.0.1",
                server_port=server.port or 5432,
                pool_size=pool_size,
                directory=self.directory,
                ignored=ignored,
            )
        )
        (self.directory / "users.txt").write_text(f'"{server.username or RUN_AS}" ""\n')
        self._process: subprocess.Popen[bytes] | None = None

    def url(self, database_url: str) -> str:
        """`database_url` (of the same server) through this PgBouncer."""
        return (
            make_url(database_url)
            .set(host="127.0.0.1", port=self.port)
            .render_as_string(hide_password=False)
        )

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 30) -> None:
        command = [PGBOUNCER, "-q"]  # its log file only: nobody reads its stderr
        if os.geteuid() == 0:
            # Its folder must be the user's to write the log and pid file in.
            user = pwd.getpwnam(RUN_AS)
            os.chown(self.directory, user.pw_uid, user.pw_gid)
            for path in self.directory.iterdir():
                os.chown(path, user.pw_uid, user.pw_gid)
            command += ["-u", RUN_AS]
        command.append(str(self.config))
        self._process = subprocess.Popen(  # noqa: S603 - our own arguments
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        while not (self._listens() and self._process.poll() is None):
            if self._process.poll() is not None or time.monotonic() > deadline:
                output = self._output()
                self.stop()
                raise RuntimeError(f"pgbouncer did not start:\n{output}")
            time.sleep(0.05)

    def _output(self) -> str:
        return self.log.read_text()[-2000:] if self.log.exists() else ""

    def _listens(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        """SIGINT: PgBouncer's "safe shutdown" waits for transactions; SIGKILL after.
        Its folder goes with it."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pool-size", type=int, default=20)
    parser.add_argument(
        "--server-url",
        default="postgresql://postgres@127.0.0.1:5432/test",
        help="the PostgreSQL server to pool (its host and port)",
    )
    args = parser.parse_args()
    pooler = PrivatePgBouncer(args.server_url, port=args.port, pool_size=args.pool_size)
    stop = False

    def stopping(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, stopping)
    signal.signal(signal.SIGINT, stopping)
    try:
        pooler.start()
        print(f"pgbouncer listening on 127.0.0.1:{pooler.port}", flush=True)
        while not stop and pooler.running:
            time.sleep(0.5)
    finally:
        pooler.stop()


if __name__ == "__main__":
    main()
