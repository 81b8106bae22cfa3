"""Bodies the server cannot decode, text the database cannot store, and requests with
thousands of problems: each gets INVALID_ARGUMENT with a status that fits the
client's metadata limits, never UNKNOWN, INTERNAL or a traceback in the log."""

from __future__ import annotations

import base64
import gc
import logging
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import grpc
import pytest
from commerce.orders.v1 import order_service_pb2
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from prometheus_client import REGISTRY

from services.core.domain.errors import FieldViolation, InvalidArgument
from services.core.rpc.requests import MALFORMED_REASON, NUL_DESCRIPTION
from services.core.rpc.statuses import MAX_FIELD_VIOLATIONS, status_for
from services.server import Application
from tests.e2e.helpers import line, pb, serving
from tests.e2e.test_callers import bearer, new_caller
from tests.errors import rpc_error

Code = grpc.StatusCode
GET_CUSTOMER = "/commerce.customers.v1.CustomerService/GetCustomer"
CREATE_CUSTOMER = "/commerce.customers.v1.CustomerService/CreateCustomer"

# CreateCustomerRequest's email (field 2) whose bytes are not UTF-8: a lone surrogate
# as Python's "surrogatepass" would write it, then a stray continuation byte.
TWO_FIELDS = pb.GetCustomerRequest(store_id=1, customer_id=300).SerializeToString()
INVALID_UTF8_EMAIL = b"\x08\x01\x12\x05\xed\xa0\x80\xbf@"
UNDECODABLE = {
    "truncated": (GET_CUSTOMER, TWO_FIELDS[:-1]),
    "invalid UTF-8": (CREATE_CUSTOMER, INVALID_UTF8_EMAIL),
    "endless varint": (GET_CUSTOMER, b"\x08" + b"\xff" * 11),
}


def raw_call(channel: grpc.aio.Channel, method: str) -> grpc.aio.UnaryUnaryMultiCallable:
    """A call that sends its bytes as they are and returns the response's bytes."""
    return channel.unary_unary(method, request_serializer=None, response_deserializer=None)


def handled(method: str, code: str) -> float:
    service, _, name = method.lstrip("/").partition("/")
    labels = {"grpc_type": "unary", "grpc_service": service, "grpc_method": name, "grpc_code": code}
    return REGISTRY.get_sample_value("grpc_server_handled_total", labels) or 0.0


@pytest.mark.parametrize("kind", UNDECODABLE)
async def test_an_undecodable_body_is_invalid_argument_logged_once_and_counted(
    channel, caplog, kind
):
    method, body = UNDECODABLE[kind]
    counted = handled(method, "INVALID_ARGUMENT")
    caplog.set_level(logging.INFO)

    failure = await rpc_error(raw_call(channel, method)(body, timeout=10), Code.INVALID_ARGUMENT)

    assert failure.error_info.reason == MALFORMED_REASON
    assert "not a valid" in failure.message
    assert "Error" not in failure.message
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [(r.levelname, r.exc_info) for r in warnings] == [("WARNING", None)]
    assert method in warnings[0].getMessage()
    access = [r for r in caplog.records if r.name == "commerce.rpc"]
    assert [r.grpc_code for r in access] == ["INVALID_ARGUMENT"]
    assert handled(method, "INVALID_ARGUMENT") == counted + 1


async def test_without_a_caller_token_an_undecodable_body_is_unauthenticated(
    settings, tmp_path: Path, caplog
):
    token, callers_line = new_caller("billing")
    callers = tmp_path / "callers"
    callers.write_text(callers_line + "\n")
    guarded = settings.model_copy(update={"caller_tokens_file": str(callers)})
    async with serving(guarded) as (_, channel):
        method, body = UNDECODABLE["invalid UTF-8"]
        caplog.set_level(logging.WARNING)
        await rpc_error(raw_call(channel, method)(body, timeout=10), Code.UNAUTHENTICATED)
        assert not any(MALFORMED_REASON in r.getMessage() for r in caplog.records)
        assert not any("undecodable" in r.getMessage() for r in caplog.records)

        failure = await rpc_error(
            raw_call(channel, method)(body, timeout=10, metadata=bearer(token)),
            Code.INVALID_ARGUMENT,
        )
        assert failure.error_info.reason == MALFORMED_REASON


def string_fields(
    descriptor: Descriptor, chain: tuple[FieldDescriptor, ...] = ()
) -> Iterator[tuple[FieldDescriptor, ...]]:
    """Every string field reachable from a message, as the chain of fields leading to it."""
    for field in descriptor.fields:
        if field.type == FieldDescriptor.TYPE_STRING:
            yield (*chain, field)
        elif field.type == FieldDescriptor.TYPE_MESSAGE and len(chain) < 5:
            yield from string_fields(field.message_type, (*chain, field))


def with_nul(descriptor: Descriptor, chain: tuple[FieldDescriptor, ...]) -> tuple[Message, str]:
    """A request with "a\\0b" in the field at the end of `chain`, and that field's path."""
    request = message_factory.GetMessageClass(descriptor)()
    target, path = request, []
    for field in chain:
        repeated = field.is_repeated
        path.append(f"{field.name}[0]" if repeated else field.name)
        if field is chain[-1]:
            if repeated:
                getattr(target, field.name).append("a\x00b")
            else:
                setattr(target, field.name, "a\x00b")
        elif repeated:
            target = getattr(target, field.name).add()
        else:
            target = getattr(target, field.name)
    return request, ".".join(path)


async def test_nul_in_any_string_field_of_any_request_is_refused(server: Application, channel):
    """Walks every request message of every RPC the server hosts, nested and repeated
    fields included: a new field cannot forget the rule."""
    pool = descriptor_pool.Default()
    checked = set()
    for service_name in server.service_names:
        for rpc in pool.FindServiceByName(service_name).methods:
            request_type = rpc.input_type
            for chain in string_fields(request_type):
                request, path = with_nul(request_type, chain)
                method = f"/{service_name}/{rpc.name}"
                call = raw_call(channel, method)(request.SerializeToString(), timeout=10)
                failure = await rpc_error(call, Code.INVALID_ARGUMENT)
                violations = failure.bad_request.field_violations
                described = {(v.field, v.description) for v in violations}
                assert described == {(path, NUL_DESCRIPTION)}, method
                checked.add(f"{rpc.name}.{path}")
    # The field the rule was once forgotten in, a nested one and a repeated one.
    assert {
        "AddLoyaltyPoints.reason",
        "CreateOrder.line_items[0].sku",
        "UpdateCustomer.update_mask.paths[0]",
    } <= checked


async def test_ten_thousand_bad_line_items_get_a_capped_status(orders, store_id):
    bad = line(sku="", quantity=0, unit_price_minor=-1, name="x" * 201)
    request = order_service_pb2.CreateOrderRequest(
        store_id=store_id, currency_code="EUR", line_items=[bad] * 10_000
    )

    failure = await rpc_error(orders.CreateOrder(request, timeout=30), Code.INVALID_ARGUMENT)

    violations = failure.bad_request.field_violations
    assert len(violations) == MAX_FIELD_VIOLATIONS
    assert violations[0].field == "line_items"  # too many lines, reported first
    total = int(failure.error_info.metadata["field_violations"])
    assert total > 100 * 3  # every line of the first hundred has its problems
    omitted = total - MAX_FIELD_VIOLATIONS
    assert failure.error_info.metadata["field_violations_omitted"] == str(omitted)
    assert f"{total} problems, {omitted} of them not detailed" in failure.message


def trailer_bytes(status: grpc.Status) -> int:
    """Trailer size as clients count it (HPACK: name + value + 32 per entry), with the
    status and message headers gRPC adds."""
    entries = [(key, value) for key, value in status.trailing_metadata]
    entries += [("grpc-status", str(status.code.value[0])), ("grpc-message", quote(status.details))]
    size = 0
    for key, value in entries:
        encoded = base64.b64encode(value) if isinstance(value, bytes) else value.encode()
        size += len(key) + len(encoded) + 32
    return size


def test_the_worst_invalid_argument_status_fits_well_under_8_kib():
    """Long paths, long non-ASCII descriptions, thousands of them: the status stays
    under half of the smallest default client limit (gRPC C-core: 8 KiB)."""
    wide = "\u202e🙂" * 500
    violations = [FieldViolation(f"line_items[{i}].{wide}", wide) for i in range(10_000)]
    error = InvalidArgument(violations, message=wide)

    size = trailer_bytes(status_for(error, "commerce.orders.v1"))

    assert size < 4096, size


def traceback_length(error: BaseException) -> int:
    length, frame = 0, error.__traceback__
    while frame is not None:
        length, frame = length + 1, frame.tb_next
    return length


async def test_refusals_keep_nothing_alive(channel):
    """The fuzzer found the server growing by megabytes per thousand undecodable
    bodies: one error instance, raised for each, chained every raise's traceback
    (and the frames it held) onto itself."""
    method, body = UNDECODABLE["truncated"]
    for _ in range(50):
        await rpc_error(raw_call(channel, method)(body, timeout=10), Code.INVALID_ARGUMENT)
    gc.collect()
    kept = [
        traceback_length(thing)
        for thing in gc.get_objects()
        if isinstance(thing, InvalidArgument) and thing.reason == MALFORMED_REASON
    ]
    assert all(length < 20 for length in kept), kept
