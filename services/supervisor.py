"""`serve --workers N`: N server processes share one port through SO_REUSEPORT (the
kernel spreads connections over them), as grpc's Python multiprocessing example
does. This parent process starts them, restarts one that dies, forwards SIGTERM and
SIGINT, and serves their summed Prometheus metrics."""

from __future__ import annotations

import ctypes
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from types import FrameType

from services.core.settings import Settings, env_name
from services.listen import CannotListen, claim_for_workers

logger = logging.getLogger(__name__)

# A worker that dies this soon after its start counts as a failed start; after
# MAX_QUICK_FAILURES of them in a row the supervisor gives up.
QUICK_FAILURE_SECONDS = 5.0
MAX_QUICK_FAILURES = 5

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
# Tells a worker the pid of the supervisor it must not outlive.
SUPERVISOR_PID = "COMMERCE_SUPERVISOR_PID"


class Supervisor:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics_dir = tempfile.mkdtemp(prefix="commerce-metrics-")
        self.workers: dict[int, tuple[subprocess.Popen[bytes], float]] = {}
        self.stopping = False
        self.quick_failures = 0
        self.claim: list[socket.socket] = []

    def worker_environment(self) -> dict[str, str]:
        """The parent's final settings, flags included, for the workers to read."""
        env = dict(os.environ)
        for name, value in self.settings.model_dump().items():
            env[env_name(name)] = str(value)
        env[env_name("workers")] = "1"
        env[env_name("metrics_address")] = ""  # the supervisor serves the sum
        # Workers must share one page-token key, or a token from one fails on another.
        env[env_name("page_token_secret")] = self.settings.page_token_secret or secrets.token_hex(
            32
        )
        env["PROMETHEUS_MULTIPROC_DIR"] = self.metrics_dir
        env[SUPERVISOR_PID] = str(os.getpid())
        return env

    def start_worker(self, env: dict[str, str]) -> None:
        process = subprocess.Popen([sys.executable, "-m", "services.cli", "serve"], env=env)
        self.workers[process.pid] = (process, time.monotonic())
        logger.info("worker %d started", process.pid)

    def forward(self, signum: int, _frame: FrameType | None) -> None:
        self.stopping = True
        for process, _ in self.workers.values():
            if process.poll() is None:
                process.send_signal(signum)

    def run(self) -> int:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = self.metrics_dir
        from services.server import module_problem  # after the line above: it loads metrics

        if problem := module_problem(self.settings.module_names):
            print(f"error: {problem}", file=sys.stderr)
            return 2
        for setting in ("listen_address", "http_listen_address"):
            address: str = getattr(self.settings, setting)
            if not address:
                continue
            try:
                # Held until this process exits: its workers, and only they, join the port.
                self.claim += claim_for_workers(address)
            except CannotListen as error:
                print(f"error: {error} (setting {setting})", file=sys.stderr)
                return 2
        env = self.worker_environment()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self.forward)
        if self.settings.metrics_address:
            # Imported only now: prometheus_client reads PROMETHEUS_MULTIPROC_DIR on import.
            from services.core.rpc.metrics import serve_metrics

            serve_metrics(self.settings.metrics_address)
        for _ in range(self.settings.workers):
            self.start_worker(env)
        try:
            return self._watch(env)
        finally:
            shutil.rmtree(self.metrics_dir, ignore_errors=True)

    def _watch(self, env: dict[str, str]) -> int:
        while not self.stopping:
            time.sleep(0.2)
            for pid, (process, started) in list(self.workers.items()):
                if process.poll() is None or self.stopping:
                    continue
                del self.workers[pid]
                self._forget_metrics(pid)
                logger.error("worker %d exited with %s; restarting it", pid, process.returncode)
                if time.monotonic() - started < QUICK_FAILURE_SECONDS:
                    self.quick_failures += 1
                    if self.quick_failures >= MAX_QUICK_FAILURES:
                        logger.error("workers keep failing at start; giving up")
                        self.forward(signal.SIGTERM, None)
                        return self._wait() or 1
                else:
                    self.quick_failures = 0
                self.start_worker(env)
        return self._wait()

    def _wait(self) -> int:
        """Waits for every worker to drain and exit; 0 when all exited cleanly."""
        deadline = time.monotonic() + self.settings.grace_seconds + 10
        status = 0
        for pid, (process, _) in self.workers.items():
            try:
                code = process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                code = process.wait()
            self._forget_metrics(pid)
            # A worker still starting when SIGTERM came dies of it before it could
            # serve anything: asked to stop, it stopped.
            status = status or (0 if code == -signal.SIGTERM else code)
        return status

    @staticmethod
    def _forget_metrics(pid: int) -> None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def stop_with_supervisor() -> bool:
    """Called by a worker as it starts: the kernel then sends it SIGTERM when its
    supervisor dies, even by SIGKILL, so that no worker outlives it holding the port
    and database connections. (Done in the worker rather than in a preexec_fn: the
    supervisor may run its metrics thread, and forking with threads forbids it.)
    True in a supervised worker."""
    supervisor = os.environ.get(SUPERVISOR_PID)
    if supervisor is None:
        return False
    if sys.platform != "linux":
        return True
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != int(supervisor):  # it died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)
    return True


def supervise(settings: Settings) -> int:
    return Supervisor(settings).run()
