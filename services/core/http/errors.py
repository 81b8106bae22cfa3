"""gRPC statuses as Connect errors: the code, the message and every google.rpc detail
(ErrorInfo, BadRequest, ResourceInfo, RetryInfo ...), each detail both as the
protocol's base64 bytes and as readable `debug` JSON."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import Any

import grpc
from connectrpc.code import Code
from connectrpc.errors import ConnectError, ErrorDetail
from google.protobuf import descriptor_pb2
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
            delay = error_details_pb2.RetryInfo.FromString(detail.message_bytes).retry_delay
            seconds = math.ceil(delay.ToTimedelta().total_seconds())
            headers.append(("retry-after", str(max(seconds, 1))))
    if error.code is Code.UNAUTHENTICATED:
        headers.append(("www-authenticate", "Bearer"))
    return headers
