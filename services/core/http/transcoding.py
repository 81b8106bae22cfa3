"""A REST request as the gRPC request of its route, as Google's HTTP/JSON
transcoding builds it (AIP-127):

- path variables set the fields they name, converted from text by field type;
- `body: "*"` parses the whole JSON body into the request; `body: "<field>"` parses
  it into that field; both strictly (a field the message has not is refused, as the
  Connect path refuses it);
- every other field may come from the query string, by its lowerCamelCase or
  snake_case name, nested ones with dots (`createTimeStart`, `customer.email`),
  repeated ones by repetition, enums by name or number, Timestamp, Duration,
  FieldMask and the wrappers in their JSON string form; a parameter that names no
  such field is refused. A path variable or a field the body fills cannot be set
  from the query string.

A field the body sets and a path variable names must agree: a body that says store
2 sent to /v1/stores/1/... is refused rather than quietly overruled."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any, cast
from urllib.parse import parse_qsl

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from services.core.domain.errors import InvalidArgument
from services.core.http.codecs import malformed_error
from services.core.http.routes import Route

# Messages whose JSON form is one string (or scalar), so a query parameter can set them.
_STRING_FORM_MESSAGES = frozenset(
    {
        "google.protobuf.Timestamp",
        "google.protobuf.Duration",
        "google.protobuf.FieldMask",
    }
)
_WRAPPERS = frozenset(
    f"google.protobuf.{kind}Value"
    for kind in ("Double", "Float", "Int64", "UInt64", "Int32", "UInt32", "Bool", "String", "Bytes")
)
_INTEGER_TYPES = frozenset(
    {
        FieldDescriptor.TYPE_INT32,
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT32,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_SINT32,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_FIXED32,
        FieldDescriptor.TYPE_FIXED64,
        FieldDescriptor.TYPE_SFIXED32,
        FieldDescriptor.TYPE_SFIXED64,
    }
)
_INTEGER = re.compile(r"-?[0-9]+")
_BOOLEANS = {"true": True, "false": False, "1": True, "0": False}
# How much of a refused value a message quotes.
_QUOTED = 40


def build_request(
    route: Route,
    bindings: Iterable[tuple[tuple[str, ...], str]],
    query_string: bytes,
    body: bytes,
) -> Message:
    """The gRPC request of a REST call. Raises InvalidArgument naming what is wrong."""
    request_class = route.request_class
    request = request_class()
    if route.body and body.strip():
        _parse_body(request, route.body, body)
    if query_string:
        _apply_query(request, route, query_string)
    for path, text in bindings:
        _bind_path_variable(request, path, text)
    return request


def _parse_body(request: Message, body_field: str, body: bytes) -> None:
    try:
        if body_field == "*":
            json_format.Parse(body, request, ignore_unknown_fields=False)
            return
        found = _descriptor(request).fields_by_name[body_field]
        if found.message_type is not None and not found.is_repeated:
            target = getattr(request, body_field)
            target.SetInParent()
            json_format.Parse(body, target, ignore_unknown_fields=False)
        else:
            value = json.loads(body)
            json_format.ParseDict({found.json_name: value}, request, ignore_unknown_fields=False)
    except Exception as error:  # ParseError, or whatever the parser makes of hostile bytes
        raise malformed_error(_descriptor(request), str(error)) from None


def _apply_query(request: Message, route: Route, query_string: bytes) -> None:
    text = query_string.decode("utf-8", "replace")
    # By field, not by spelling: `customerIds=1&customer_ids=2` is one repeated field.
    grouped: dict[tuple[str, ...], tuple[list[FieldDescriptor], list[str]]] = {}
    for key, value in parse_qsl(text, keep_blank_values=True, encoding="utf-8"):
        if route.body == "*":
            raise InvalidArgument.of(
                key, "not a query parameter of this method: its body carries every field"
            )
        fields = _resolve(_descriptor(request), key)
        path = tuple(found.name for found in fields)
        grouped.setdefault(path, (fields, []))[1].append(value)
    bound = route.bound_fields()
    for path, (fields, values) in grouped.items():
        if any(path[: len(taken)] == taken for taken in bound):
            raise InvalidArgument.of(
                ".".join(path), "is set by the path or the body, not by the query string"
            )
        _set_from_query(request, fields, values)


def _resolve(message: Descriptor, dotted: str) -> list[FieldDescriptor]:
    """The fields a query parameter's name leads through, by JSON or proto names."""
    fields: list[FieldDescriptor] = []
    current: Descriptor | None = message
    for name in dotted.split("."):
        found = _field_named(current, name) if current is not None else None
        if found is None:
            raise InvalidArgument.of(dotted, f"names no field of {message.full_name}")
        fields.append(found)
        current = found.message_type
    return fields


def _field_named(message: Descriptor, name: str) -> FieldDescriptor | None:
    found: FieldDescriptor | None = message.fields_by_name.get(name)
    if found is not None:
        return found
    return next((f for f in message.fields if f.json_name == name), None)


def _set_from_query(request: Message, fields: list[FieldDescriptor], values: list[str]) -> None:
    leaf = fields[-1]
    name = ".".join(found.name for found in fields)
    if any(found.is_repeated for found in fields[:-1]) or _is_map(leaf):
        raise InvalidArgument.of(name, "cannot be set from the query string; use the gRPC API")
    if leaf.message_type is not None and not _has_scalar_form(leaf.message_type):
        raise InvalidArgument.of(name, "is a message: name one of its fields, with a dot")
    if not leaf.is_repeated and len(values) > 1:
        raise InvalidArgument.of(name, f"given {len(values)} times; it takes one value")
    converted = [_json_value(leaf, value, name) for value in values]
    parent = request
    for found in fields[:-1]:
        parent = getattr(parent, found.name)
    _parse_into(parent, leaf, converted if leaf.is_repeated else converted[0], name)


def _bind_path_variable(request: Message, path: tuple[str, ...], text: str) -> None:
    name = ".".join(path)
    parent = request
    for part in path[:-1]:
        parent = getattr(parent, part)
    leaf = _descriptor(parent).fields_by_name[path[-1]]
    previous = getattr(parent, leaf.name)
    _parse_into(parent, leaf, _json_value(leaf, text, name), name)
    now = getattr(parent, leaf.name)
    if previous != leaf.default_value and previous != now:
        raise InvalidArgument.of(
            name, f"the path says {_quote(str(now))} but the body says {_quote(str(previous))}"
        )


def _json_value(leaf: FieldDescriptor, text: str, name: str) -> Any:
    """A query or path value as the JSON value of its field, checked for its type."""
    kind = leaf
    if leaf.message_type is not None and leaf.message_type.full_name in _WRAPPERS:
        kind = leaf.message_type.fields_by_name["value"]
    if kind.message_type is not None:
        return text  # Timestamp, Duration, FieldMask: their JSON form is this string
    if kind.type in _INTEGER_TYPES:
        if not _INTEGER.fullmatch(text):
            raise InvalidArgument.of(name, f"must be an integer, not {_quote(text)}")
        return text  # as JSON's 64-bit integers are, so the parser checks the range
    if kind.type == FieldDescriptor.TYPE_BOOL:
        if text.lower() not in _BOOLEANS:
            raise InvalidArgument.of(name, f"must be true or false, not {_quote(text)}")
        return _BOOLEANS[text.lower()]
    return text


def _parse_into(parent: Message, leaf: FieldDescriptor, value: Any, name: str) -> None:
    try:
        json_format.ParseDict({leaf.json_name: value}, parent, ignore_unknown_fields=False)
    except json_format.ParseError as error:
        problem = str(error).splitlines()[0] if str(error).strip() else "not a valid value"
        raise InvalidArgument.of(name, _problem(problem)) from None


def _problem(parser_message: str) -> str:
    """The parser's complaint without its field path prefix (the violation names it)."""
    return parser_message.rpartition(": ")[2][:120] or parser_message[:120]


def _descriptor(message: Message) -> Descriptor:
    return cast(Descriptor, message.DESCRIPTOR)


def _has_scalar_form(message: Descriptor) -> bool:
    return message.full_name in _STRING_FORM_MESSAGES or message.full_name in _WRAPPERS


def _is_map(found: FieldDescriptor) -> bool:
    return found.message_type is not None and found.message_type.GetOptions().map_entry


def _quote(text: str) -> str:
    return repr(text if len(text) <= _QUOTED else text[:_QUOTED] + "…")
