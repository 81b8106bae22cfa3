"""The two message encodings of the Connect protocol, for google.protobuf messages.

JSON requests are parsed here (the gRPC server takes binary), strictly: a field the
message does not have is refused, as the protobuf JSON mapping asks of parsers by
default, so that a misspelt `requestId` fails loudly instead of quietly creating a
second order on a retry. A body that does not parse is INVALID_ARGUMENT with the
reason MALFORMED_REQUEST, as an undecodable gRPC body is. Binary requests pass
through as they came: the gRPC server decodes them, with the same checks as any."""

from __future__ import annotations

import json
from typing import Any

from connectrpc.errors import ConnectError
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor
from google.protobuf.message import Message

from services.core.domain.errors import InvalidArgument
from services.core.http.errors import connect_error
from services.core.rpc.requests import MALFORMED_REASON
from services.core.rpc.statuses import status_for

# What a caller sees of the parser's complaint: its first line, which names the field.
MAX_PARSER_MESSAGE = 150


class JsonCodec:
    """Protobuf JSON, written compactly (no indentation, no spaces)."""

    def name(self) -> str:
        return "json"

    def encode(self, message: Message) -> bytes:
        as_dict = json_format.MessageToDict(message)
        return json.dumps(as_dict, ensure_ascii=False, separators=(",", ":")).encode()

    def decode(self, data: bytes | bytearray, message_class: type[Message]) -> Message:
        message = message_class()
        try:
            json_format.Parse(bytes(data), message, ignore_unknown_fields=False)
        except Exception as error:  # ParseError, or whatever the parser makes of hostile bytes
            raise malformed(message_class, str(error)) from None
        return message


class PassThroughProtoCodec:
    """Binary protobuf: requests stay bytes for the gRPC server to decode; responses
    are serialized as they are."""

    def name(self) -> str:
        return "proto"

    def encode(self, message: Message) -> bytes:
        return message.SerializeToString()

    def decode(self, data: bytes | bytearray, message_class: type[Message]) -> bytes:
        return bytes(data)


def malformed(message_class: type[Message], problem: str) -> ConnectError:
    """The MALFORMED_REQUEST error of a JSON body the parser refused, in the domain
    of the method's package (as the gRPC server words it for a bad binary body)."""
    descriptor: Any = message_class.DESCRIPTOR
    status = status_for(malformed_error(descriptor, problem), domain=descriptor.file.package)
    return connect_error(status.code, status.details, status.trailing_metadata)


def malformed_error(descriptor: Descriptor, problem: str) -> InvalidArgument:
    """INVALID_ARGUMENT, reason MALFORMED_REQUEST, quoting the first line of the
    parser's complaint (which names the field)."""
    reason = problem.strip().splitlines()[0][:MAX_PARSER_MESSAGE] if problem.strip() else ""
    error = InvalidArgument(
        [], f"the request body is not a valid JSON {descriptor.full_name}: {reason}"
    )
    error.reason = MALFORMED_REASON
    return error
