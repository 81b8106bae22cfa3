"""gRPC statuses as Connect errors: the code, the message and every google.rpc detail
(ErrorInfo, BadRequest, ResourceInfo, RetryInfo ...), each detail both as the
protocol's base64 bytes and as readable `debug` JSON."""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Iterable, Iterator
from typing import Any

import grpc
from connectrpc.code import Code
from connectrpc.errors import ConnectError, ErrorDetail
from google.protobuf import any_pb2, descriptor_pb2, json_format
from google.protobuf.descriptor import FileDescriptor
from google.rpc import error_details_pb2, status_pb2
from protobuf import Registry
from protobuf.wkt import Any as DetailAny
from protobuf.wkt import FileDescriptorSet

STATUS_DETAILS_KEY = "grpc-status-details-bin"
RETRY_INFO = error_details_pb2.RetryInfo.DESCRIPTOR.full_name

# The same codes under the same names, but for gRPC's CANCELLED (Connect: "canceled").
_CODES: dict[grpc.StatusCode, Code] = {
    status: Code.CANCELED if status is grpc.StatusCode.CANCELLED else Code[status.name]
    for status in grpc.StatusCode
    if status is not grpc.StatusCode.OK
}


def _messages(
    types: Iterable[descriptor_pb2.DescriptorProto],
) -> Iterator[descriptor_pb2.DescriptorProto]:
    for message in types:
        yield message
        yield from _messages(message.nested_type)


def _lower_camel(name: str) -> str:
    """A field's JSON name as protoc derives it: 'retry_delay' -> 'retryDelay'."""
    head, *rest = name.split("_")
    return head + "".join(word[:1].upper() + word[1:] for word in rest)


def _add_file(
    files: descriptor_pb2.FileDescriptorSet, file: FileDescriptor, seen: set[str]
) -> None:
    if file.name in seen:
        return
    seen.add(file.name)
    for dependency in file.dependencies:
        _add_file(files, dependency, seen)
    proto = files.file.add()
    file.CopyToProto(proto)
    # Copied from generated code, descriptors lack json_name, and protobuf-py would
    # then give every field the JSON name "".
    for message in _messages(proto.message_type):
        for field in message.field:
            if not field.json_name:
                field.json_name = _lower_camel(field.name)


def _detail_types() -> Registry:
    """The google.rpc error details as descriptors of protobuf-py, connectrpc's own
    protobuf runtime: connectrpc writes a detail's `debug` JSON only for a message of
    that runtime, never for one of google.protobuf."""
    files = descriptor_pb2.FileDescriptorSet()
    _add_file(files, error_details_pb2.DESCRIPTOR, set())
    return FileDescriptorSet.from_binary(files.SerializeToString()).to_registry()


_DETAIL_TYPES = _detail_types()


def _detail(type_url: str, value: bytes) -> ErrorDetail:
    packed = DetailAny(type_url=type_url, value=value)
    described = _DETAIL_TYPES.message(type_url.rpartition("/")[2])
    message = packed.unpack(described) if described is not None else None
    # With the message unpacked, connectrpc adds its `debug` JSON; without, bytes only.
    return ErrorDetail(message if message is not None else packed)


def connect_error(
    code: grpc.StatusCode, message: str, trailing_metadata: Iterable[tuple[str, Any]] | None
) -> ConnectError:
    """The Connect error of a gRPC status, its google.rpc.Status details included."""
    details: list[ErrorDetail] = []
    for key, value in trailing_metadata or ():
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            status = status_pb2.Status.FromString(value)
            message = status.message or message
            details = [_detail(packed.type_url, packed.value) for packed in status.details]
    return ConnectError(_CODES.get(code, Code.UNKNOWN), message, details)


def error_headers(error: ConnectError) -> list[tuple[str, str]]:
    """HTTP headers that tell a plain HTTP client what the error body does: when to
    try again (RetryInfo as Retry-After, in whole seconds) and how to authenticate."""
    headers: list[tuple[str, str]] = []
    for detail in error.details:
        if detail.type_name == RETRY_INFO:
            retry = error_details_pb2.RetryInfo.FromString(detail.message_bytes)
            headers.append(("retry-after", _whole_seconds(retry)))
    if error.code is Code.UNAUTHENTICATED:
        headers.append(("www-authenticate", "Bearer"))
    return headers


def _whole_seconds(retry: error_details_pb2.RetryInfo) -> str:
    seconds = math.ceil(retry.retry_delay.ToTimedelta().total_seconds())
    return str(max(seconds, 1))


# google.rpc.Code to HTTP status, as Google's HTTP/JSON transcoders map them (the
# Connect protocol's table is the same: both protocols answer one status alike).
HTTP_STATUSES: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}
_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


def rpc_status(
    code: grpc.StatusCode, message: str, trailing_metadata: Iterable[tuple[str, Any]] | None
) -> status_pb2.Status:
    """The google.rpc.Status of a gRPC status: the one the server sent in its
    trailers, or one of the code and message alone."""
    for key, value in trailing_metadata or ():
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            status = status_pb2.Status.FromString(value)
            status.message = status.message or message
            return status
    return status_pb2.Status(code=code.value[0], message=message)


def status_json(status: status_pb2.Status) -> bytes:
    """The error body of HTTP/JSON transcoding: `{"code": 5, "message": "...",
    "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", ...}]}`."""
    body = {
        "code": status.code,
        "message": status.message,
        "details": [_detail_json(detail) for detail in status.details],
    }
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def _detail_json(packed: any_pb2.Any) -> dict[str, Any]:
    try:
        # The google.rpc details are in the default pool (error_details_pb2 is imported).
        as_dict: dict[str, Any] = json_format.MessageToDict(packed)
    except Exception:  # a type this process does not know: its bytes, as JSON has them
        return {"@type": packed.type_url, "value": base64.b64encode(packed.value).decode()}
    return as_dict


def status_http(status: status_pb2.Status) -> tuple[int, list[tuple[str, str]]]:
    """The HTTP status of a google.rpc.Status, and the headers that advise a plain
    HTTP client: Retry-After from a RetryInfo, WWW-Authenticate when unauthenticated."""
    code = _BY_NUMBER.get(status.code, grpc.StatusCode.UNKNOWN)
    headers: list[tuple[str, str]] = []
    for packed in status.details:
        retry = error_details_pb2.RetryInfo()
        if packed.Unpack(retry):
            headers.append(("retry-after", _whole_seconds(retry)))
    if code is grpc.StatusCode.UNAUTHENTICATED:
        headers.append(("www-authenticate", "Bearer"))
    return HTTP_STATUSES.get(code, 500), headers
