"""How the benchmark measures: server CPU time from /proc, h2load runs and their
per-request log, latency percentiles."""

from __future__ import annotations

import os
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


def process_tree(root: int) -> list[int]:
    """`root` and every process below it (a supervisor's workers)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:  # it ended while we looked
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            parents.setdefault(parent, []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo += parents.get(pid, [])
    return tree


def cpu_seconds(root: int) -> float:
    """User + system CPU time so far of `root` and its descendants, from the kernel's
    own accounting: stable on a busy machine, where wall time is not."""
    total = 0
    for pid in process_tree(root):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / _TICKS_PER_SECOND


@dataclass(frozen=True)
class Result:
    """One target under one load for the measured window."""

    requests: int  # succeeded in the window
    errors: int
    seconds: float
    latencies_ms: Sequence[float]
    cpu_seconds: float  # the server's, over the window

    @classmethod
    def combined(cls, results: Sequence[Result]) -> Result:
        """Several windows of one server as one."""
        return cls(
            sum(result.requests for result in results),
            sum(result.errors for result in results),
            sum(result.seconds for result in results),
            [latency for result in results for latency in result.latencies_ms],
            sum(result.cpu_seconds for result in results),
        )

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds

    def percentile(self, share: float) -> float:
        ordered = sorted(self.latencies_ms)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, int(share * len(ordered)))]

    @property
    def cpu_ms_per_1000(self) -> float:
        """Server CPU milliseconds per 1,000 requests (= CPU microseconds per request)."""
        return self.cpu_seconds * 1e6 / max(self.requests + self.errors, 1)


@contextmanager
def cpu_window(server_pid: int, warmup: float) -> Iterator[Callable[[], float]]:
    """Samples the server's CPU `warmup` seconds after entry and again at exit; the
    yielded function gives the difference once the block is done."""
    samples: list[float] = []
    sampler = threading.Timer(warmup, lambda: samples.append(cpu_seconds(server_pid)))
    sampler.start()
    try:
        yield lambda: samples[1] - samples[0]
    finally:
        sampler.join()
        samples.append(cpu_seconds(server_pid))


@dataclass(frozen=True)
class H2Load:
    """A load of h2load: `connections` x `streams` requests in flight."""

    connections: int
    streams: int
    warmup: float
    duration: float
    http1: bool = False

    def command(self, url: str, body: Path | None, headers: Sequence[str], log: Path) -> list[str]:
        command = ["h2load", "-t", "1", "-c", str(self.connections), "-m", str(self.streams)]
        # h2load takes whole units: milliseconds say every duration exactly.
        command += ["-D", f"{round(self.duration * 1000)}ms"]
        if self.warmup:
            command += ["--warm-up-time", f"{round(self.warmup * 1000)}ms"]
        command += ["--log-file", str(log)]
        if self.http1:
            command.append("--h1")
        if body is not None:
            command += ["-d", str(body)]
        for header in headers:
            command += ["-H", header]
        return [*command, url]

    def run(
        self,
        url: str,
        server_pid: int,
        *,
        body: bytes | None = None,
        headers: Sequence[str] = (),
    ) -> Result:
        with tempfile.TemporaryDirectory(prefix="bench-") as scratch:
            body_file = None
            if body is not None:
                body_file = Path(scratch, "body")
                body_file.write_bytes(body)
            log = Path(scratch, "requests.log")
            started = time.time()
            with cpu_window(server_pid, self.warmup) as cpu:
                done = subprocess.run(  # noqa: S603 - our own arguments
                    self.command(url, body_file, headers, log),
                    capture_output=True,
                    text=True,
                    check=False,
                )
            if done.returncode != 0:
                raise RuntimeError(f"h2load failed: {done.stderr or done.stdout}")
            return _from_log(log, started + self.warmup, self.duration, cpu())


def _from_log(log: Path, measure_from: float, duration: float, cpu: float) -> Result:
    """Counts the requests that started in the measured window: 2xx as done (a gRPC
    status travels in trailers h2load does not read: callers check it themselves),
    anything else as errors."""
    ok: list[float] = []
    errors = 0
    since_us = measure_from * 1e6
    for line in log.read_text().splitlines():
        start_us, status, elapsed_us = line.split("\t")
        if float(start_us) < since_us:
            continue
        if status.startswith("2"):
            ok.append(int(elapsed_us) / 1000)
        else:
            errors += 1
    return Result(len(ok), errors, duration, ok, cpu)


def grpc_frame(message: bytes) -> bytes:
    """A unary gRPC request body: uncompressed flag, big-endian length, message."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


GRPC_HEADERS = ("content-type: application/grpc", "te: trailers")
