"""Prometheus metrics of the gRPC server, named as grpc-ecosystem's go-grpc-prometheus
names them, so that existing dashboards and alerts work unchanged.

With several worker processes, prometheus_client's multiprocess mode aggregates
them: the supervisor sets PROMETHEUS_MULTIPROC_DIR before any worker starts and
serves the sum (services.supervisor)."""

from __future__ import annotations

import os

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    multiprocess,
    start_http_server,
)

STARTED = Counter(
    "grpc_server_started_total",
    "RPCs started on the server.",
    ["grpc_type", "grpc_service", "grpc_method"],
)
HANDLED = Counter(
    "grpc_server_handled_total",
    "RPCs completed on the server, whatever their status.",
    ["grpc_type", "grpc_service", "grpc_method", "grpc_code"],
)
HANDLING_SECONDS = Histogram(
    "grpc_server_handling_seconds",
    "Time the server took to answer an RPC.",
    ["grpc_type", "grpc_service", "grpc_method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
IN_FLIGHT = Gauge(
    "grpc_server_in_flight",
    "RPCs being handled right now.",
    ["grpc_service"],
    multiprocess_mode="livesum",
)


def serve_metrics(address: str) -> None:
    """Serves /metrics on `address` (host:port) from a background thread."""
    host, _, port = address.rpartition(":")
    registry = None
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    start_http_server(int(port), addr=host or "0.0.0.0", registry=registry or _default())  # noqa: S104


def _default() -> CollectorRegistry:
    from prometheus_client import REGISTRY

    return REGISTRY
