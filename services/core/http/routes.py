"""The REST routes of the mounted services: each unary method's `google.api.http`
rule (and its additional bindings) as a path template bound to the method.

A template is literal segments, `{field}` (or `{field=*}`) variables of one segment
each, and an optional trailing `:verb`. Multi-segment variables (`{name=shelves/*}`,
`**`) are not supported: such a rule is reported by `RouteTable.unsupported`, and the
gateway logs it, never drops it silently.

Matching costs one dict lookup by (segment count, verb) and a comparison with the few
templates of that shape; nothing is compiled per request."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import unquote

from google.api import annotations_pb2, http_pb2
from google.protobuf import message_factory
from google.protobuf.descriptor import (
    Descriptor,
    FieldDescriptor,
    MethodDescriptor,
    ServiceDescriptor,
)
from google.protobuf.message import Message


class UnsupportedRule(ValueError):
    """A google.api.http rule this gateway cannot serve (the message says why)."""


@dataclass(frozen=True)
class Route:
    """One HTTP method and path template, bound to one gRPC method."""

    http_method: str
    template: str
    method: MethodDescriptor
    # (segment index, field path) of each variable, e.g. (3, ("customer_id",)).
    variables: tuple[tuple[int, tuple[str, ...]], ...]
    body: str  # "" (no body), "*" (the whole request) or a top-level field's name
    response_body: str  # "" (the whole response) or a top-level field's name
    request_class: type[Message]
    response_class: type[Message]

    @property
    def grpc_path(self) -> str:
        return f"/{self.method.containing_service.full_name}/{self.method.name}"

    def bound_fields(self) -> set[tuple[str, ...]]:
        """The field paths the path and the body set, which the query cannot."""
        paths = {path for _, path in self.variables}
        if self.body and self.body != "*":
            paths.add((self.body,))
        return paths


@dataclass
class _Shape:
    """One path template with its variables left anonymous, and the route of each
    HTTP method served at it."""

    segments: tuple[str | None, ...]  # a literal, or None for a variable
    routes: dict[str, Route] = field(default_factory=dict)

    def matches(self, raw_segments: list[str]) -> bool:
        for expected, actual in zip(self.segments, raw_segments, strict=True):
            if expected is None:
                if not actual:
                    return False  # a variable takes a non-empty segment
            elif expected != actual:
                return False
        return True


@dataclass(frozen=True)
class Match:
    """A path that matched: its route for the request's HTTP method (None when only
    other methods are served there), the variables' decoded values, and what is
    allowed at that path."""

    route: Route | None
    bindings: tuple[tuple[tuple[str, ...], str], ...]
    allowed: tuple[str, ...]


@dataclass
class RouteTable:
    """Every route, by (segment count, verb)."""

    shapes: dict[tuple[int, str], list[_Shape]] = field(default_factory=dict)
    routes: list[Route] = field(default_factory=list)
    unsupported: list[str] = field(default_factory=list)

    def add(self, route: Route, segments: tuple[str | None, ...], verb: str) -> None:
        candidates = self.shapes.setdefault((len(segments), verb), [])
        shape = next((s for s in candidates if s.segments == segments), None)
        if shape is None:
            shape = _Shape(segments)
            candidates.append(shape)
            # Literals before variables, position by position: `/a/b` wins over `/a/{x}`.
            candidates.sort(key=lambda s: tuple(part is None for part in s.segments))
        if route.http_method in shape.routes:
            self.unsupported.append(
                f"{route.grpc_path}: {route.http_method} {route.template} is already "
                f"served by {shape.routes[route.http_method].grpc_path}"
            )
            return
        shape.routes[route.http_method] = route
        self.routes.append(route)

    def match(self, http_method: str, raw_path: str) -> Match | None:
        """The route of `raw_path` (still percent-encoded, without its query)."""
        if not raw_path.startswith("/"):
            return None
        segments = raw_path[1:].split("/")
        last = segments[-1]
        head, colon, verb = last.rpartition(":")
        attempts = [(segments, "")]
        if colon and "/" not in verb:
            # A custom method; else a last segment that merely holds a colon.
            attempts.insert(0, ([*segments[:-1], head], verb))
        for candidate, candidate_verb in attempts:
            for shape in self.shapes.get((len(candidate), candidate_verb), ()):
                if shape.matches(candidate):
                    return _matched(shape, http_method, candidate)
        return None


def _matched(shape: _Shape, http_method: str, segments: list[str]) -> Match:
    allowed = tuple(sorted(shape.routes))
    route = shape.routes.get(http_method)
    if route is None:
        return Match(None, (), allowed)
    bindings = tuple((path, unquote(segments[index])) for index, path in route.variables)
    return Match(route, bindings, allowed)


def http_rules(method: MethodDescriptor) -> list[http_pb2.HttpRule]:
    """The method's rule and its additional bindings (none when it has no rule)."""
    options = method.GetOptions()
    if not options.HasExtension(annotations_pb2.http):
        return []
    rule: http_pb2.HttpRule = options.Extensions[annotations_pb2.http]
    return [rule, *rule.additional_bindings]


def route_table(services: Iterable[ServiceDescriptor]) -> RouteTable:
    """The routes of the unary and server-streaming methods of `services` that declare
    google.api.http rules."""
    table = RouteTable()
    for method in (method for service in services for method in service.methods):
        if method.client_streaming:
            continue
        for rule in http_rules(method):
            try:
                route, segments, verb = parse_rule(method, rule)
            except UnsupportedRule as problem:
                table.unsupported.append(f"/{method.full_name}: {problem}")
                continue
            table.add(route, segments, verb)
    return table


def parse_rule(
    method: MethodDescriptor, rule: http_pb2.HttpRule
) -> tuple[Route, tuple[str | None, ...], str]:
    """The route of one rule, with its anonymous segments and its verb."""
    pattern = rule.WhichOneof("pattern")
    if pattern is None:
        raise UnsupportedRule("the rule names no HTTP method")
    if pattern == "custom":
        http_method, template = rule.custom.kind.upper(), rule.custom.path
    else:
        http_method, template = pattern.upper(), getattr(rule, pattern)
    segments, variables, verb = parse_template(template, method.input_type)
    body = rule.body
    if body and body != "*":
        _top_level_field(method.input_type, body, "body")
    if rule.response_body:
        _top_level_field(method.output_type, rule.response_body, "response_body")
    route = Route(
        http_method,
        template,
        method,
        variables,
        body,
        rule.response_body,
        message_factory.GetMessageClass(method.input_type),
        message_factory.GetMessageClass(method.output_type),
    )
    return route, segments, verb


def parse_template(
    template: str, request: Descriptor
) -> tuple[tuple[str | None, ...], tuple[tuple[int, tuple[str, ...]], ...], str]:
    """`/v1/stores/{store_id}/orders/{order_id}:pay` -> its segments (None for each
    variable), its variables (segment index, field path) and its verb ('pay')."""
    if not template.startswith("/"):
        raise UnsupportedRule(f"{template!r} does not start with /")
    path, verb = template, ""
    last = template.rsplit("/", 1)[-1]
    if ":" in last.rsplit("}", 1)[-1]:
        path, _, verb = template.rpartition(":")
    segments: list[str | None] = []
    variables: list[tuple[int, tuple[str, ...]]] = []
    for index, segment in enumerate(path[1:].split("/")):
        if segment.startswith("{") and segment.endswith("}"):
            name, _, value_pattern = segment[1:-1].partition("=")
            if value_pattern not in ("", "*"):
                raise UnsupportedRule(f"{template}: only one-segment variables are served")
            variables.append((index, _scalar_field_path(request, name, template)))
            segments.append(None)
        elif not segment or "{" in segment or "}" in segment or segment in ("*", "**"):
            raise UnsupportedRule(f"{template}: segment {segment!r} is not served")
        else:
            segments.append(segment)
    return tuple(segments), tuple(variables), verb


def _scalar_field_path(request: Descriptor, dotted: str, template: str) -> tuple[str, ...]:
    message: Descriptor | None = request
    names = tuple(dotted.split("."))
    found: FieldDescriptor | None = None
    for name in names:
        found = message.fields_by_name.get(name) if message is not None else None
        if found is None:
            raise UnsupportedRule(f"{template}: {request.full_name} has no field {dotted}")
        message = found.message_type
    if found is None or found.message_type is not None or found.is_repeated:
        raise UnsupportedRule(f"{template}: {dotted} is not a singular scalar field")
    return names


def _top_level_field(message: Descriptor, name: str, option: str) -> None:
    if name not in message.fields_by_name:
        raise UnsupportedRule(f"{option} names {name}, which {message.full_name} has not")
