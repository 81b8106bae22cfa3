"""The HTTP mappings of the protos (google.api.http), read from the descriptors as a
transcoding gateway reads them: every RPC has one, under /v1/stores/{store_id}/, no
two RPCs answer the same request, every path variable and body names a real field
of the request, GET and DELETE carry no body, and custom verbs are lowerCamelCase.

`http_rule_problems` is run on the real descriptors and on edited copies loaded into
a pool of their own, so each rule is seen to fail."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pytest
from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor, FileDescriptor, MethodDescriptor

from tests.descriptors import (
    commerce_files,
    editable_copies,
    http_rule,
    method_path,
    method_proto,
    methods,
    rebuilt,
)

Copies = dict[str, descriptor_pb2.FileDescriptorProto]

PREFIX = "/v1/stores/{store_id}/"
BODYLESS = ("get", "delete")
# AIP-136: a custom method's verb, after the colon, is lowerCamelCase.
_LOWER_CAMEL = re.compile(r"^[a-z][a-zA-Z0-9]*$")
_VARIABLE = re.compile(r"\{([^}=]+)(?:=[^}]*)?\}")
# AIP-131..135: the standard methods map to resources without a verb; any other
# method is custom and says what it does with one.
STANDARD_PREFIXES = ("Get", "List", "Create", "Update", "Delete")


@dataclass(frozen=True)
class Route:
    """An HTTP rule reduced to what decides which requests it answers."""

    verb: str
    segments: tuple[str, ...]  # a variable is "*": its name decides nothing
    custom_verb: str

    def overlaps(self, other: Route) -> bool:
        """Whether one request could match both (a variable matches any segment)."""
        return (
            self.verb == other.verb
            and self.custom_verb == other.custom_verb
            and len(self.segments) == len(other.segments)
            and all(
                a == b or "*" in (a, b) for a, b in zip(self.segments, other.segments, strict=True)
            )
        )


def _pattern(rule: http_pb2.HttpRule) -> tuple[str, str]:
    """(verb, path template) of a rule: ("get", "/v1/...")."""
    kind = rule.WhichOneof("pattern")
    if kind is None:
        return "", ""
    if kind == "custom":
        return rule.custom.kind.lower(), rule.custom.path
    return kind, getattr(rule, kind)


def _split(template: str) -> tuple[list[str], str]:
    """The template's segments and its custom verb ("" without one). The verb is the
    text after the last colon outside braces."""
    depth, verb_at = 0, -1
    for index, char in enumerate(template):
        depth += {"{": 1, "}": -1}.get(char, 0)
        if char == ":" and depth == 0:
            verb_at = index
    path, verb = (template, "") if verb_at < 0 else (template[:verb_at], template[verb_at + 1 :])
    return path.strip("/").split("/"), verb


def _route(verb: str, template: str) -> Route:
    segments, custom_verb = _split(template)
    return Route(verb, tuple("*" if _VARIABLE.fullmatch(s) else s for s in segments), custom_verb)


def _field_at(message: Descriptor, path: str) -> FieldDescriptor | None:
    """The field `a.b.c` of `message`, through singular message fields; None if absent."""
    field = None
    for part in path.split("."):
        if message is None:
            return None
        field = message.fields_by_name.get(part)
        if field is None or field.is_repeated:
            return None
        message = field.message_type
    return field


def _rule_problems(method: MethodDescriptor, verb: str, template: str, body: str) -> list[str]:
    name = method_path(method)
    request = method.input_type
    problems = []
    if not template.startswith(PREFIX):
        problems.append(f"{name}: path {template} does not start with {PREFIX}")
    for variable in _VARIABLE.findall(template):
        field = _field_at(request, variable)
        if field is None or field.message_type is not None:
            problems.append(
                f"{name}: path variable {{{variable}}} is no scalar field of the request"
            )
    if verb in BODYLESS and body:
        problems.append(f"{name}: {verb.upper()} with a body ({body})")
    if body not in ("", "*") and body not in request.fields_by_name:
        problems.append(f"{name}: body {body} is no field of the request")
    _, custom_verb = _split(template)
    if custom_verb and not _LOWER_CAMEL.match(custom_verb):
        problems.append(f"{name}: custom verb :{custom_verb} is not lowerCamelCase")
    if not custom_verb and not method.name.startswith(STANDARD_PREFIXES):
        problems.append(f"{name}: a custom method without a :verb")
    return problems


def http_rule_problems(files: Sequence[FileDescriptor]) -> list[str]:
    """Every broken HTTP rule in `files`, one line each, naming the RPC."""
    problems: list[str] = []
    routes: list[tuple[Route, str, str]] = []
    for method in methods(files):
        rule = http_rule(method)
        verb, template = _pattern(rule) if rule is not None else ("", "")
        if rule is None or not template:
            problems.append(f"{method_path(method)}: no google.api.http rule")
            continue
        if rule.additional_bindings:
            problems.append(f"{method_path(method)}: additional_bindings are not checked here")
        problems += _rule_problems(method, verb, template, rule.body)
        route = _route(verb, template)
        for other, other_name, other_template in routes:
            if route.overlaps(other):
                problems.append(
                    f"{method_path(method)}: {verb.upper()} {template} clashes with "
                    f"{other_name}'s {other_template}"
                )
        routes.append((route, method_path(method), template))
    return problems


def test_the_protos_break_no_http_rule():
    assert http_rule_problems(commerce_files()) == []


def test_every_rpc_is_seen():
    """The checks walk every service of every file; a sample of each module's RPCs
    proves the walk reaches them all."""
    seen = {method_path(method) for method in methods(commerce_files())}
    assert {
        "commerce.customers.v1.CustomerService/BatchGetCustomers",
        "commerce.orders.v1.OrderService/CancelOrder",
        "commerce.orders.v1.CustomerOrderService/GetCustomerOrderStats",
        "commerce.loyalty.v1.CustomerLoyaltyService/RedeemLoyaltyPoints",
    } <= seen


CUSTOMERS = "commerce.customers.v1.CustomerService"
ORDERS = "commerce.orders.v1.OrderService"


def _rule(copies: Copies, path: str) -> http_pb2.HttpRule:
    rule: http_pb2.HttpRule = method_proto(copies, path).options.Extensions[annotations_pb2.http]
    return rule


def _no_rule(copies: Copies) -> None:
    method_proto(copies, f"{ORDERS}/ShipOrder").options.ClearExtension(annotations_pb2.http)


def _outside_the_store(copies: Copies) -> None:
    _rule(copies, f"{ORDERS}/GetOrder").get = "/v1/orders/{order_id}"


def _same_route_other_names(copies: Copies) -> None:
    """GET .../orders/{id} twice, under other variable names: one request, two RPCs."""
    _rule(
        copies, f"{CUSTOMERS}/GetCustomerMetrics"
    ).get = "/v1/stores/{store_id}/orders/{customer_id}"


def _unknown_variable(copies: Copies) -> None:
    _rule(copies, f"{CUSTOMERS}/GetCustomer").get = "/v1/stores/{store_id}/customers/{customer}"


def _message_variable(copies: Copies) -> None:
    rule = _rule(copies, f"{CUSTOMERS}/UpdateCustomer")
    rule.patch = "/v1/stores/{store_id}/customers/{customer}"


def _unknown_body(copies: Copies) -> None:
    _rule(copies, f"{CUSTOMERS}/CreateCustomerAddress").body = "adress"


def _get_with_body(copies: Copies) -> None:
    _rule(copies, f"{ORDERS}/ListOrders").body = "*"


def _verb_not_camel(copies: Copies) -> None:
    _rule(copies, f"{ORDERS}/PayOrder").post = "/v1/stores/{store_id}/orders/{order_id}:Pay_now"


def _custom_method_without_verb(copies: Copies) -> None:
    _rule(
        copies, f"{ORDERS}/DeliverOrder"
    ).post = "/v1/stores/{store_id}/orders/{order_id}/delivery"


@pytest.mark.parametrize(
    ("break_it", "problem"),
    [
        (_no_rule, "OrderService/ShipOrder: no google.api.http rule"),
        (_outside_the_store, "OrderService/GetOrder: path /v1/orders/{order_id} does not start"),
        (
            _same_route_other_names,
            "OrderService/GetOrder: GET /v1/stores/{store_id}/orders/{order_id} clashes with "
            "commerce.customers.v1.CustomerService/GetCustomerMetrics's "
            "/v1/stores/{store_id}/orders/{customer_id}",
        ),
        (_unknown_variable, "GetCustomer: path variable {customer} is no scalar field"),
        (_message_variable, "UpdateCustomer: path variable {customer} is no scalar field"),
        (_unknown_body, "CreateCustomerAddress: body adress is no field of the request"),
        (_get_with_body, "OrderService/ListOrders: GET with a body (*)"),
        (_verb_not_camel, "PayOrder: custom verb :Pay_now is not lowerCamelCase"),
        (_custom_method_without_verb, "DeliverOrder: a custom method without a :verb"),
    ],
)
def test_each_rule_reports_the_rpc_that_breaks_it(
    break_it: Callable[[Copies], None], problem: str
) -> None:
    copies = editable_copies(commerce_files())
    break_it(copies)
    problems = http_rule_problems(rebuilt(copies.values()))
    assert [line for line in problems if problem in line], problems
