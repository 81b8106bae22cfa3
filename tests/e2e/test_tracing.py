"""Tracing (services.core.tracing): a real server with tracing on, its spans kept by
the SDK's in-memory exporter, called through real stubs (and the HTTP gateway) with
a caller's W3C `traceparent`; and tracing off, the default, leaving no trace of
itself. A subprocess shows the OTEL_* variables honoured."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from commerce.customers.v1 import customer_service_pb2_grpc
from commerce.events.v1 import event_service_pb2, event_service_pb2_grpc
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from pythonjsonlogger.json import JsonFormatter

from services.core.logs import TEXT_FORMAT, TextFormatter
from services.core.settings import Settings
from services.core.tracing import Tracing
from services.server import Application
from tests.e2e.helpers import PASSWORD, pb, unique_email
from tests.e2e.test_http_gateway import CURL, curl
from tests.process import commerce, free_port, migrated_sqlite_env, running_server, wait_for

CUSTOMERS = "commerce.customers.v1.CustomerService"


@dataclass(frozen=True)
class CallerSpan:
    """The span of a caller that traces too: its ids and the header naming it."""

    trace_id: int
    span_id: int

    @classmethod
    def new(cls) -> CallerSpan:
        return cls(secrets.randbits(128) or 1, secrets.randbits(64) or 1)

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id:032x}-{self.span_id:016x}-01"

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("traceparent", self.traceparent),)


@dataclass
class Traced:
    app: Application
    channel: grpc.aio.Channel
    stub: customer_service_pb2_grpc.CustomerServiceStub
    spans: InMemorySpanExporter

    def of_trace(self, trace_id: int) -> list[ReadableSpan]:
        return [s for s in self.spans.get_finished_spans() if s.context.trace_id == trace_id]

    async def after_calls(self, trace_id: int, calls: int) -> list[ReadableSpan]:
        """The trace's spans once `calls` server spans of it ended: a call that fails
        sends its status before its span ends (context.abort sends it at once)."""
        async with asyncio.timeout(30):
            # The exporter has no event to wait on.
            while len(server_spans(self.of_trace(trace_id))) < calls:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        return self.of_trace(trace_id)


@pytest.fixture(scope="module")
async def traced(settings: Settings) -> AsyncIterator[Traced]:
    """A server of this module's own with tracing on, its spans kept in memory (sent
    as each ends), with the HTTP gateway."""
    spans = InMemorySpanExporter()
    app = Application(
        settings.model_copy(update={"tracing": True, "http_listen_address": "127.0.0.1:0"}),
        tracing=Tracing([SimpleSpanProcessor(spans)]),
    )
    port = await app.start("127.0.0.1:0")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = customer_service_pb2_grpc.CustomerServiceStub(channel)
            yield Traced(app, channel, stub, spans)
    finally:
        await app.stop(grace=1)


def server_spans(spans: Sequence[ReadableSpan]) -> list[ReadableSpan]:
    return [span for span in spans if span.kind is SpanKind.SERVER]


def children_of(parent: ReadableSpan, spans: Sequence[ReadableSpan]) -> list[ReadableSpan]:
    return [
        span
        for span in spans
        if span.parent is not None and span.parent.span_id == parent.context.span_id
    ]


def ids(spans: Sequence[ReadableSpan]) -> set[int]:
    return {span.context.span_id for span in spans}


def every_attribute_text(spans: Sequence[ReadableSpan]) -> str:
    """Every attribute, event and status description of `spans`, as one text."""
    parts: list[str] = []
    for span in spans:
        parts += [f"{key}={value}" for key, value in (span.attributes or {}).items()]
        parts += [str(event.attributes) for event in span.events]
        parts.append(span.status.description or "")
        parts.append(span.name)
    return "\n".join(parts)


async def test_a_call_is_one_server_span_under_the_callers_span_with_its_sql_beneath(
    traced: Traced, store_id: int, backend: str
) -> None:
    caller = CallerSpan.new()
    created = await traced.stub.CreateCustomer(
        pb.CreateCustomerRequest(store_id=store_id, email=unique_email(), password=PASSWORD),
        metadata=caller.metadata,
    )
    assert created.customer.name

    spans = traced.of_trace(caller.trace_id)
    (server,) = server_spans(spans)
    assert server.name == f"{CUSTOMERS}/CreateCustomer"
    assert server.parent is not None
    assert server.parent.span_id == caller.span_id
    assert server.parent.is_remote
    attributes = server.attributes or {}
    assert attributes["rpc.system"] == "grpc"
    assert attributes["rpc.service"] == CUSTOMERS
    assert attributes["rpc.method"] == "CreateCustomer"
    assert attributes["rpc.grpc.status_code"] == grpc.StatusCode.OK.value[0]
    assert server.status.status_code is StatusCode.UNSET

    statements = [span for span in spans if span.kind is SpanKind.CLIENT]
    assert statements, "no SQL span"
    (hashing,) = [span for span in spans if span.kind is SpanKind.INTERNAL]
    assert hashing.name == "bcrypt hashpw"
    # Every other span of the trace is a child of the call's.
    assert ids(children_of(server, spans)) == ids([*statements, hashing])
    assert len(spans) == len(statements) + 2
    for span in statements:
        assert (span.attributes or {})["db.system"] == backend
    inserts = [s for s in statements if (s.attributes or {}).get("db.operation") == "INSERT"]
    assert any(span.name == "INSERT customers" for span in inserts)
    assert "COMMIT" in {span.name for span in statements}


async def test_no_span_carries_a_bound_value(traced: Traced, store_id: int) -> None:
    """The email and password of the calls, and the stored password hash, are in no
    span attribute, event or status: statements are recorded with placeholders."""
    caller = CallerSpan.new()
    email = unique_email()
    await traced.stub.CreateCustomer(
        pb.CreateCustomerRequest(store_id=store_id, email=email, password=PASSWORD),
        metadata=caller.metadata,
    )
    await traced.stub.AuthenticateCustomer(
        pb.AuthenticateCustomerRequest(store_id=store_id, email=email, password=PASSWORD),
        metadata=caller.metadata,
    )
    with pytest.raises(grpc.aio.AioRpcError) as failed:  # a duplicate: an integrity error
        await traced.stub.CreateCustomer(
            pb.CreateCustomerRequest(store_id=store_id, email=email, password=PASSWORD),
            metadata=caller.metadata,
        )
    assert failed.value.code() is grpc.StatusCode.ALREADY_EXISTS

    spans = await traced.after_calls(caller.trace_id, 3)
    calls = server_spans(spans)
    assert len(calls) == 3
    # bcrypt's work is a span of its own, beneath its call's.
    (check,) = [span for span in spans if span.name == "bcrypt checkpw"]
    assert check.parent is not None
    assert check.parent.span_id == calls[1].context.span_id
    assert calls[1].name == f"{CUSTOMERS}/AuthenticateCustomer"
    text = every_attribute_text(spans)
    assert "db.statement=" in text
    for secret in (email, email.split("@")[0], PASSWORD, "$2b$"):
        assert secret not in text


async def test_a_failed_call_is_an_error_span_with_its_code(traced: Traced, store_id: int) -> None:
    """A call without a caller's trace starts one of its own."""
    before = ids(traced.spans.get_finished_spans())
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await traced.stub.GetCustomer(pb.GetCustomerRequest(store_id=store_id, customer_id=10**12))
    assert failed.value.code() is grpc.StatusCode.NOT_FOUND

    def new_calls() -> list[ReadableSpan]:
        new = [s for s in traced.spans.get_finished_spans() if s.context.span_id not in before]
        return [s for s in server_spans(new) if s.name == f"{CUSTOMERS}/GetCustomer"]

    async with asyncio.timeout(30):  # its status went out before its span ended
        while not new_calls():  # noqa: ASYNC110 (the exporter has no event)
            await asyncio.sleep(0.01)
    (server,) = new_calls()
    assert server.parent is None
    assert server.status.status_code is StatusCode.ERROR
    assert server.status.description == "NOT_FOUND"
    assert (server.attributes or {})["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]
    assert children_of(server, traced.of_trace(server.context.trace_id))


async def test_log_lines_carry_the_trace_id(
    traced: Traced, store_id: int, caplog: pytest.LogCaptureFixture
) -> None:
    caller = CallerSpan.new()
    with caplog.at_level(logging.INFO, logger="commerce.rpc"):
        await traced.stub.CreateCustomer(
            pb.CreateCustomerRequest(store_id=store_id, email=unique_email()),
            metadata=caller.metadata,
        )
    (server,) = server_spans(traced.of_trace(caller.trace_id))
    (record,) = [r for r in caplog.records if r.name == "commerce.rpc"]
    assert record.trace_id == f"{caller.trace_id:032x}"
    assert record.span_id == f"{server.context.span_id:016x}"

    text_line = TextFormatter(TEXT_FORMAT).format(record)
    assert text_line.endswith(f"trace_id={caller.trace_id:032x} span_id={record.span_id}")
    json_line = json.loads(JsonFormatter("%(message)s").format(record))
    assert json_line["trace_id"] == f"{caller.trace_id:032x}"


async def test_an_export_is_one_span_and_a_subscription_none(traced: Traced, store_id: int) -> None:
    """A bounded server stream (ExportCustomers) gets a span for the whole stream, its
    snapshot's reads beneath; a subscription (StreamEvents) none, nor its reads."""
    await traced.stub.CreateCustomer(
        pb.CreateCustomerRequest(store_id=store_id, email=unique_email())
    )
    exporting = CallerSpan.new()
    exported = [
        customer
        async for response in traced.stub.ExportCustomers(
            pb.ExportCustomersRequest(store_id=store_id), metadata=exporting.metadata
        )
        for customer in response.customers
    ]
    assert len(exported) == 1
    spans = await traced.after_calls(exporting.trace_id, 1)
    (server,) = server_spans(spans)
    assert server.name == f"{CUSTOMERS}/ExportCustomers"
    assert server.parent is not None
    assert server.parent.span_id == exporting.span_id
    reads = children_of(server, spans)
    assert "SELECT customers" in {span.name for span in reads}

    subscribing = CallerSpan.new()
    events = event_service_pb2_grpc.EventServiceStub(traced.channel)
    stream = events.StreamEvents(
        event_service_pb2.StreamEventsRequest(store_id=store_id), metadata=subscribing.metadata
    )
    async with asyncio.timeout(30):
        first = await stream.read()  # the customer's event: the stream read the feed
    assert first is not grpc.aio.EOF
    assert first.event.type.endswith("CustomerCreated"), first.event.type
    stream.cancel()
    assert traced.of_trace(subscribing.trace_id) == []


@pytest.mark.skipif(CURL is None, reason="needs the curl binary")
async def test_the_http_gateway_passes_the_callers_traceparent_on(
    traced: Traced, store_id: int
) -> None:
    caller = CallerSpan.new()
    assert traced.app.http is not None
    answer = await asyncio.to_thread(
        curl,
        traced.app.http_port,
        "CreateCustomer",
        {"storeId": store_id, "email": unique_email()},
        "-H",
        f"traceparent: {caller.traceparent}",
    )
    assert answer.status == 200, answer.body
    (server,) = server_spans(traced.of_trace(caller.trace_id))
    assert server.name == f"{CUSTOMERS}/CreateCustomer"
    assert server.parent is not None
    assert server.parent.span_id == caller.span_id


@pytest.fixture
def span_context_of_rpc_lines() -> Iterator[list[bool]]:
    """For every commerce.rpc record made meanwhile: whether a valid span context was
    current when it was written."""
    seen: list[bool] = []
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        if record.name == "commerce.rpc":
            seen.append(trace.get_current_span().get_span_context().is_valid)
        return record

    logging.setLogRecordFactory(factory)
    try:
        yield seen
    finally:
        logging.setLogRecordFactory(previous)


async def test_tracing_off_makes_no_span_and_installs_nothing(
    settings: Settings,
    store_id: int,
    span_context_of_rpc_lines: list[bool],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Off by default; and OTEL_SDK_DISABLED=true wins over the setting."""
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    factory = logging.getLogRecordFactory()
    for tried in (settings, settings.model_copy(update={"tracing": True})):
        app = Application(tried)
        assert app.tracing is None
        assert app.database.trace_statements is None
        assert logging.getLogRecordFactory() is factory
        port = await app.start("127.0.0.1:0")
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = customer_service_pb2_grpc.CustomerServiceStub(channel)
                with caplog.at_level(logging.INFO, logger="commerce.rpc"):
                    await stub.CreateCustomer(
                        pb.CreateCustomerRequest(store_id=store_id, email=unique_email()),
                        metadata=CallerSpan.new().metadata,
                    )
        finally:
            await app.stop(grace=0)
    assert span_context_of_rpc_lines == [False, False]
    rpc_lines = [r for r in caplog.records if r.name == "commerce.rpc"]
    assert len(rpc_lines) == 2
    assert not [r for r in rpc_lines if hasattr(r, "trace_id")]


def test_the_otel_variables_configure_the_exporter(tmp_path: Path) -> None:
    """`commerce serve` with tracing on and OTEL_TRACES_EXPORTER=console prints its
    spans, with the service name OTEL_SERVICE_NAME gives, and JSON log lines with the
    caller's trace id; an exporter nobody provides stops it at start."""
    env = migrated_sqlite_env(tmp_path, "traced store") | {
        "COMMERCE_TRACING": "true",
        "COMMERCE_LOG_FORMAT": "json",
        "OTEL_TRACES_EXPORTER": "console",
        "OTEL_SERVICE_NAME": "commerce-under-test",
        "OTEL_BSP_SCHEDULE_DELAY": "50",  # milliseconds: the batch goes out at once
    }
    caller = CallerSpan.new()
    with running_server(tmp_path, env) as server:
        with grpc.insecure_channel(server.target) as channel:
            stub = customer_service_pb2_grpc.CustomerServiceStub(channel)
            stub.CreateCustomer(
                pb.CreateCustomerRequest(store_id=1, email=unique_email()),
                metadata=caller.metadata,
                timeout=30,
            )
        # The console exporter prints one span after another, the call's last; the
        # lines per RPC are written in batches (services.core.logs), within 0.1 s.
        wait_for(
            lambda: (
                f'"name": "{CUSTOMERS}/CreateCustomer"' in server.output()
                and '"logger": "commerce.rpc"' in server.output()
            )
        )
        output = server.output()
    trace_id = f"{caller.trace_id:032x}"
    assert f'"trace_id": "0x{trace_id}"' in output
    assert '"service.name": "commerce-under-test"' in output
    rpc_lines = [
        json.loads(line)
        for line in output.splitlines()
        if line.startswith("{") and '"logger": "commerce.rpc"' in line
    ]
    assert [line["trace_id"] for line in rpc_lines] == [trace_id]

    refused = commerce(
        "serve",
        "--listen-address",
        f"127.0.0.1:{free_port()}",
        env=env | {"OTEL_TRACES_EXPORTER": "carrier-pigeon"},
        check=False,
    )
    assert refused.returncode == 2
    assert "no span exporter named 'carrier-pigeon'" in refused.stderr
