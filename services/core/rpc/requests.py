"""Decoding request bodies, and the text rule every request field obeys.

grpc.aio decodes a request before any interceptor's behaviour runs; a decoder that
raises ends the call UNKNOWN with a traceback in the log. The interceptor
(services.core.rpc.interceptor) therefore wraps each method's decoder in `tolerant`:
a body that is no valid message, or that carries text the database cannot store,
becomes a `Refusal` the guarded behaviour answers INVALID_ARGUMENT, logged and counted
like any call.

The text rule lives here, not in each module's rules, so a new string field cannot
forget it: PostgreSQL text cannot hold U+0000 (NUL), so no string anywhere in a
request may carry it (every other Unicode code point can be stored; invalid UTF-8
never gets this far, protobuf refuses it while decoding)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from services.core.domain.errors import DomainError, FieldViolation, InvalidArgument

Decoder = Callable[[bytes], Any]

NUL = "\x00"
NUL_DESCRIPTION = "must not contain the NUL character (U+0000)"
MALFORMED_REASON = "MALFORMED_REQUEST"


@dataclass(frozen=True, slots=True)
class Refusal:
    """What a tolerant decoder returns instead of a request it refuses."""

    error: DomainError
    malformed: bool  # an undecodable body, worth a warning in the log


def tolerant(decode: Decoder, message_name: str) -> Decoder:
    """`decode` that returns a Refusal instead of raising, and refuses NUL in text."""
    problem = f"the request body is not a valid {message_name} message (protobuf, UTF-8 text)"

    def decode_tolerantly(body: bytes) -> Any:
        try:
            request = decode(body)
        except Exception:  # DecodeError, or whatever else a parser makes of hostile bytes
            # A new error each time: raising one instance again and again would chain
            # every raise's traceback (and the frames it holds) onto it, for good.
            malformed = InvalidArgument([], problem)
            malformed.reason = MALFORMED_REASON
            return Refusal(malformed, malformed=True)
        # A NUL character is a zero byte in the body: most bodies have none, and
        # they skip the walk through the fields.
        if 0 in body and (paths := list(nul_fields(request))):
            violations = [FieldViolation(path, NUL_DESCRIPTION) for path in paths]
            return Refusal(InvalidArgument(violations), malformed=False)
        return request

    return decode_tolerantly


def nul_fields(message: Message, prefix: str = "") -> Iterator[str]:
    """Paths of the string fields in `message`, at any depth, that hold a NUL:
    `line_items[3].sku`, `update_mask.paths[0]`, `labels["key"]`."""
    for field, value in message.ListFields():
        path = prefix + field.name
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            yield from _nul_map_entries(field.message_type.fields_by_name["value"], path, value)
        elif field.is_repeated:
            for index, item in enumerate(value):
                yield from _nul_value(field, f"{path}[{index}]", item)
        else:
            yield from _nul_value(field, path, value)


def _nul_value(field: FieldDescriptor, path: str, value: Any) -> Iterator[str]:
    if field.type == FieldDescriptor.TYPE_STRING:
        if NUL in value:
            yield path
    elif field.type == FieldDescriptor.TYPE_MESSAGE:
        yield from nul_fields(value, path + ".")


def _nul_map_entries(value_field: FieldDescriptor, path: str, entries: Any) -> Iterator[str]:
    for key, value in entries.items():
        entry = f"{path}[{key!r}]"
        if isinstance(key, str) and NUL in key:
            yield entry
        else:
            yield from _nul_value(value_field, entry, value)
