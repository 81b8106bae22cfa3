"""OpenTelemetry tracing, off unless the `tracing` setting (COMMERCE_TRACING) is on.

When on, the process has a tracer provider of its own (never OpenTelemetry's global
one, so that several servers in one process, as in the tests, keep theirs apart),
configured by the standard OTEL_* variables:

- OTEL_TRACES_EXPORTER: `otlp` (the default), `console`, `none`, or any exporter an
  installed package registers (comma-separated for several). `otlp` speaks gRPC unless
  OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL says `http/protobuf`, which needs the
  opentelemetry-exporter-otlp-proto-http package; the exporter itself reads
  OTEL_EXPORTER_OTLP_ENDPOINT, _HEADERS, _TIMEOUT, _COMPRESSION, _CERTIFICATE...
- OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG (default parentbased_always_on),
  OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES (service.name defaults to
  "commerce"), OTEL_BSP_* (the batch processor's queue and delays), OTEL_PROPAGATORS
  (default: W3C tracecontext and baggage), and OTEL_SDK_DISABLED=true, which turns
  tracing off whatever the setting says.

Off, nothing here is imported by the server: no interceptor, no wrapped statement, no
log record factory, so calls pay nothing for it.

The spans (services.core.rpc.tracing makes the server's): one SERVER span per call,
child of the caller's `traceparent`; a CLIENT span per SQL statement and per commit
beneath it (TracedTransaction), and an INTERNAL one for each bcrypt hash or check
(`bcrypt hashpw`, `bcrypt checkpw`: the wait for a thread included); and the trace
id on every log line written inside a call (`trace_id`, `span_id`). No span attribute
or event ever carries a bound value of a statement or an exception's message, which
may quote them (emails, password hashes): only the SQL text with its placeholders,
and an exception's type."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from functools import lru_cache
from importlib.metadata import entry_points, version
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode
from sqlalchemy import Delete, Insert, Select, Update
from sqlalchemy.engine import Dialect

from services.core.db.statements import Row, Statement, Transaction

DEFAULT_SERVICE_NAME = "commerce"
INSTRUMENTATION_NAME = "commerce"
EXPORTER_GROUP = "opentelemetry_traces_exporter"
# What each OTLP protocol's exporter registers itself as (EXPORTER_GROUP).
_OTLP_BY_PROTOCOL = {"grpc": "otlp_proto_grpc", "http/protobuf": "otlp_proto_http"}
_OTLP_PACKAGES = {
    "otlp_proto_grpc": "opentelemetry-exporter-otlp-proto-grpc",
    "otlp_proto_http": "opentelemetry-exporter-otlp-proto-http",
}


def sdk_disabled(environ: Mapping[str, str] = os.environ) -> bool:
    """OTEL_SDK_DISABLED=true: the standard switch that turns every signal off."""
    return environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"


def exporter_names(environ: Mapping[str, str] = os.environ) -> list[str]:
    """The entry point names of the exporters OTEL_TRACES_EXPORTER asks for, `otlp`
    resolved by the OTLP protocol variables; [] for `none`."""
    asked = [name.strip() for name in environ.get("OTEL_TRACES_EXPORTER", "otlp").split(",")]
    names = []
    for name in asked:
        if not name or name == "none":
            continue
        if name == "otlp":
            protocol = (
                environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
                or "grpc"
            ).strip()
            if protocol not in _OTLP_BY_PROTOCOL:
                raise ValueError(
                    f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: expected grpc or http/protobuf"
                )
            name = _OTLP_BY_PROTOCOL[protocol]
        names.append(name)
    return names


def exporter_classes(environ: Mapping[str, str] = os.environ) -> list[type[SpanExporter]]:
    """The exporter classes OTEL_TRACES_EXPORTER names; ValueError naming one that no
    installed package provides."""
    classes = []
    for name in exporter_names(environ):
        found = entry_points(group=EXPORTER_GROUP, name=name)
        if not found:
            package = _OTLP_PACKAGES.get(name)
            hint = f" (install {package})" if package else ""
            raise ValueError(f"OTEL_TRACES_EXPORTER: no span exporter named {name!r}{hint}")
        classes.append(next(iter(found)).load())
    return classes


def resource(environ: Mapping[str, str] = os.environ) -> Resource:
    """The process's resource: OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME, with
    service.name "commerce" unless they name one."""
    detected = Resource.create({SERVICE_VERSION: version("commerce")})
    named = environ.get("OTEL_SERVICE_NAME") or "service.name=" in environ.get(
        "OTEL_RESOURCE_ATTRIBUTES", ""
    )
    if named:
        return detected
    return detected.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))


class Tracing:
    """A tracer provider of the process's own, its spans sent to `processors`; while
    it is open, log records written inside a span carry its ids."""

    def __init__(self, processors: Sequence[SpanProcessor]) -> None:
        # The sampler comes from OTEL_TRACES_SAMPLER(_ARG) (the SDK reads them).
        self.provider = TracerProvider(resource=resource(), shutdown_on_exit=False)
        for processor in processors:
            self.provider.add_span_processor(processor)
        self.tracer = self.provider.get_tracer(INSTRUMENTATION_NAME, version("commerce"))
        self._previous_factory: Callable[..., logging.LogRecord] | None = None

    @classmethod
    def from_environment(cls) -> Tracing:
        """Exporters from OTEL_TRACES_EXPORTER, each behind a batch processor (which
        exports off the event loop, in its own thread, within OTEL_BSP_* bounds)."""
        return cls([BatchSpanProcessor(exporter()) for exporter in exporter_classes()])

    def open(self) -> None:
        """Starts putting the current span's ids on log records (`trace_id`, `span_id`,
        in hex as trace backends show them)."""
        previous = logging.getLogRecordFactory()
        self._previous_factory = previous

        def with_trace_ids(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            context = trace.get_current_span().get_span_context()
            if context.is_valid:
                record.trace_id = format(context.trace_id, "032x")
                record.span_id = format(context.span_id, "016x")
            return record

        logging.setLogRecordFactory(with_trace_ids)

    def close(self) -> None:
        """Stops the log correlation and exports the spans still queued."""
        if self._previous_factory is not None:
            logging.setLogRecordFactory(self._previous_factory)
            self._previous_factory = None
        self.provider.shutdown()

    def transaction(self, transaction: Transaction, dialect: Dialect) -> Transaction:
        return TracedTransaction(transaction, self.tracer, dialect)

    def work(self, name: str) -> AbstractContextManager[object]:
        """An INTERNAL span `name` beneath the current span (bcrypt's work), when that
        one records; else nothing."""
        if not trace.get_current_span().is_recording():
            return nullcontext()
        return self.tracer.start_as_current_span(
            name, record_exception=False, set_status_on_exception=False
        )


def failed(span: trace.Span, error: BaseException) -> None:
    """Marks `span` failed, naming the exception's type only: messages of database
    errors quote the statement's bound values."""
    span.set_status(Status(StatusCode.ERROR, type(error).__name__))
    span.set_attribute("error.type", type(error).__qualname__)


@lru_cache(maxsize=1024)
def _described(statement: Statement, dialect: Dialect) -> tuple[str, dict[str, str]]:
    """A statement's span name and attributes, made once: its SQL as this database
    gets it, placeholders and all (never a value)."""
    if dialect.driver == "asyncpg":
        sql = statement.for_asyncpg(dialect)[0]
    else:
        sql = str(statement.for_core()[0].compile(dialect=dialect))  # type: ignore[attr-defined]
    operation = sql.split(None, 1)[0].upper() if sql.strip() else "SQL"
    table = _table_of(statement.statement)
    attributes = {
        "db.system": dialect.name,
        "db.operation": operation,
        "db.statement": sql,
    }
    if table:
        attributes["db.sql.table"] = table
    return (f"{operation} {table}" if table else operation), attributes


def _table_of(statement: Any) -> str:
    if isinstance(statement, Insert | Update | Delete):
        return str(getattr(statement.table, "name", ""))
    if isinstance(statement, Select):
        for source in statement.get_final_froms():
            if name := getattr(source, "name", None):
                return str(name)
    return ""


class TracedTransaction(Transaction):
    """Another transaction's statements, each in a CLIENT span of its own beneath the
    current span. Outside any recording span (housekeeping, an unsampled call) it adds
    no span, only the check."""

    def __init__(self, inner: Transaction, tracer: trace.Tracer, dialect: Dialect) -> None:
        self._inner = inner
        self._tracer = tracer
        self._dialect = dialect
        self.dialect = inner.dialect

    async def commit(self) -> None:
        if not trace.get_current_span().is_recording():
            await self._inner.commit()
            return
        attributes = {"db.system": self._dialect.name, "db.operation": "COMMIT"}
        with self._span("COMMIT", attributes) as span:
            try:
                await self._inner.commit()
            except BaseException as error:
                failed(span, error)
                raise

    async def fetch(self, statement: Statement, params: Mapping[str, Any]) -> Sequence[Row]:
        if not trace.get_current_span().is_recording():
            return await self._inner.fetch(statement, params)
        name, attributes = _described(statement, self._dialect)
        with self._span(name, attributes) as span:
            try:
                rows = await self._inner.fetch(statement, params)
            except BaseException as error:
                failed(span, error)
                raise
            span.set_attribute("db.response.returned_rows", len(rows))
            return rows

    async def execute_many(self, statement: Statement, rows: Sequence[Mapping[str, Any]]) -> None:
        if not trace.get_current_span().is_recording():
            await self._inner.execute_many(statement, rows)
            return
        name, attributes = _described(statement, self._dialect)
        with self._span(name, attributes) as span:
            if len(rows) != 1:
                span.set_attribute("db.operation.batch.size", len(rows))
            try:
                await self._inner.execute_many(statement, rows)
            except BaseException as error:
                failed(span, error)
                raise

    def _span(self, name: str, attributes: Mapping[str, Any]) -> Any:
        # Exceptions are recorded by `failed`, without their messages.
        return self._tracer.start_as_current_span(
            name,
            kind=SpanKind.CLIENT,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        )
