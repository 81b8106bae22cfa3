"""What tracing costs: `python -m bench.tracing`.

GetCustomer under h2load (32 calls in flight, as bench.run), every request carrying
a sampled W3C `traceparent`, against three builds of `commerce serve` on one seeded
PostgreSQL store:

- before: the server as it was before tracing existed (the commit before the one
  that added services/core/tracing.py, or --before REF), run from a `git archive`
  of it with this environment's packages;
- off: this server, tracing off (the default);
- on: this server with COMMERCE_TRACING=true, OTEL_TRACES_SAMPLER=always_on (every
  call traced: a server span and its SQL spans), exported by the OTLP/gRPC exporter
  behind the SDK's batch processor to a stand-in collector in this process that
  counts what it receives and answers at once.

Windows in the order before off on on off before, each figure the two windows
together, so that a drift of the machine weighs on all alike. Reports requests per
second and server CPU per request (the server's own, from /proc; the collector's is
this process's) and their ratios to `off` and to `before`, and the spans the
collector received per request. Nothing is asserted about time.

Usage: python -m bench.tracing [--database-url URL] [--before REF] [--smoke] [--json FILE]"""

from __future__ import annotations

import secrets
import subprocess
import sys
import tarfile
import tempfile
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict
from io import BytesIO
from pathlib import Path
from typing import Any

import grpc
from commerce.customers.v1 import customer_service_pb2 as customers_pb
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from bench import servers, study
from bench.measure import GRPC_HEADERS, H2Load, Result, grpc_frame
from bench.run import Report, Scale, Unary, machine, prepared_store
from bench.urls import sqlalchemy_url

_GET = "/commerce.customers.v1.CustomerService/GetCustomer"
TRACED_MODULE = "services/core/tracing.py"

SCALES = {
    # GetCustomer reads one row by its key: the store's size matters little.
    "full": Scale(100_000, 0, 0, warmup=2, duration=10, bcrypt_rounds=4),
    "smoke": Scale(2_000, 0, 0, warmup=0.5, duration=1, bcrypt_rounds=4),
}


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """A stand-in OTLP/gRPC collector: counts the spans it is sent, keeps nothing."""

    def __init__(self) -> None:
        self.spans = 0
        self._lock = threading.Lock()

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        received = sum(
            len(scope.spans)
            for resource in request.resource_spans
            for scope in resource.scope_spans
        )
        with self._lock:
            self.spans += received
        return trace_service_pb2.ExportTraceServiceResponse()


@contextmanager
def collector() -> Iterator[tuple[Collector, int]]:
    """The collector on a free loopback port."""
    sink = Collector()
    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    add_servicer: Any = trace_service_pb2_grpc.add_TraceServiceServicer_to_server  # untyped
    add_servicer(sink, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield sink, port
    finally:
        server.stop(grace=None)


def before_ref(given: str | None) -> str:
    """The commit whose server is `before`: given, or the parent of the commit that
    added the tracing module."""
    if given:
        return given
    added = subprocess.run(  # noqa: S603 - our own arguments
        ["git", "log", "--diff-filter=A", "--format=%H", "--", TRACED_MODULE],  # noqa: S607
        cwd=servers.ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    if not added:
        raise RuntimeError(f"no commit added {TRACED_MODULE}: give --before REF")
    return added[-1] + "^"


def unpack_services(ref: str, into: Path) -> None:
    """services/ as of `ref`, written under `into`."""
    archive = subprocess.run(  # noqa: S603 - a ref the operator gave, as one argument
        ["git", "archive", "--format=tar", ref, "services"],  # noqa: S607
        cwd=servers.ROOT,
        capture_output=True,
        check=True,
    ).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")


@contextmanager
def server(
    name: str,
    url: str,
    probe: tuple[int, int],
    logs: Path,
    *,
    source: Path | None = None,
    settings: dict[str, str] | None = None,
) -> Iterator[servers.Running]:
    """`commerce serve` (from `source`'s services/ when given) with `settings` added
    to the environment."""
    port = servers.free_port()
    env = servers.environment(
        DATABASE_URL=url, COMMERCE_PAGE_TOKEN_SECRET=servers.PAGE_TOKEN_SECRET, **(settings or {})
    )
    command = [servers.COMMERCE, "serve", "--listen-address", f"127.0.0.1:{port}"]
    if source is not None:
        # Found before the installed (editable) services by the import system.
        env["PYTHONPATH"] = str(source)
        command = [sys.executable, "-m", "services.cli", *command[1:]]
    with servers._process(
        name, command, env, port, lambda p: servers._grpc_answers(p, *probe), logs
    ) as running:
        yield running


def run(url: str, scale_name: str, before: str | None) -> Report:
    scale = SCALES[scale_name]
    store = prepared_store(url, scale, reseed=False)
    ref = before_ref(before)
    traceparent = f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"
    report = Report(
        scale_name,
        machine=machine(),
        settings={"store": asdict(store), "before": ref, "traceparent": "sampled (-01)"}
        | {"warmup_s": scale.warmup, "duration_s": scale.duration, "in_flight": 32},
    )
    request = customers_pb.GetCustomerRequest(
        store_id=store.store_id, customer_id=store.typical_customer_id
    )
    call = Unary(_GET, request)
    load = H2Load(2, 16, scale.warmup, scale.duration)
    headers = (*GRPC_HEADERS, f"traceparent: {traceparent}")
    probe = (store.store_id, store.typical_customer_id)
    body = grpc_frame(call.request.SerializeToString())
    with (
        tempfile.TemporaryDirectory(prefix="bench-tracing-") as scratch,
        collector() as (sink, sink_port),
    ):
        logs, source = Path(scratch), Path(scratch) / "before"
        unpack_services(ref, source)
        otel = {
            "COMMERCE_TRACING": "true",
            "OTEL_TRACES_SAMPLER": "always_on",
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink_port}",
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
            "OTEL_SERVICE_NAME": "commerce-bench",
        }
        with (
            server("before", url, probe, logs, source=source) as old,
            server("off", url, probe, logs) as off,
            server("on", url, probe, logs, settings=otel) as on,
        ):
            targets = [old, off, on]
            windows: dict[str, list[Result]] = {target.name: [] for target in targets}
            spans: dict[str, int] = {target.name: 0 for target in targets}
            for target in [*targets, *reversed(targets)]:
                call.check(target.target)
                received = sink.spans
                result = load.run(
                    f"http://{target.target}{_GET}", target.pid, body=body, headers=headers
                )
                windows[target.name].append(result)
                spans[target.name] += sink.spans - received
    combined = {name: Result.combined(results) for name, results in windows.items()}
    for name, result in combined.items():
        report.add(
            "GetCustomer, sampled traceparent",
            name,
            result,
            per_second_vs_off=_ratio(result.per_second, combined["off"].per_second),
            per_second_vs_before=_ratio(result.per_second, combined["before"].per_second),
            cpu_vs_off=_ratio(result.cpu_ms_per_1000, combined["off"].cpu_ms_per_1000),
            cpu_vs_before=_ratio(result.cpu_ms_per_1000, combined["before"].cpu_ms_per_1000),
            # Spans exported meanwhile, per request served (those still queued at the
            # window's end arrive in the next: an approximation).
            spans_per_request=round(spans[name] / max(result.requests, 1), 2),
        )
    return report


def _ratio(value: float, reference: float) -> float:
    return round(value / reference, 3) if reference else 0.0


def render(report: Report) -> str:
    lines = [
        f"store: {report.settings['store']['customers']:,} customers; before = "
        f"{report.settings['before']}",
        "",
        "| server | req/s | p50 ms | p99 ms | CPU µs/req | req/s vs off | CPU vs off |"
        " req/s vs before | CPU vs before | spans/req | errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report.rows:
        lines.append(
            f"| {row['target']} | {row['per_second']:,.0f} | {row['p50_ms']} | {row['p99_ms']} |"
            f" {row['cpu_ms_per_1000']:.0f} | {row['per_second_vs_off']:.3f} |"
            f" {row['cpu_vs_off']:.3f} | {row['per_second_vs_before']:.3f} |"
            f" {row['cpu_vs_before']:.3f} | {row['spans_per_request']} | {row['errors']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = study.arguments("tracing", __doc__, database="commerce_bench_tracing")
    parser.add_argument(
        "--before",
        help="git commit of the server before tracing (default: the parent of the commit "
        f"that added {TRACED_MODULE})",
    )
    args = parser.parse_args(argv)
    report = run(sqlalchemy_url(args.database_url), study.scale(args), args.before)
    return study.publish(report, render(report), args.json)


if __name__ == "__main__":
    sys.exit(main())
