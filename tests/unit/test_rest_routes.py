"""The gateway's REST routes and request building (services/core/http/routes.py,
transcoding.py), on the real descriptors: every google.api.http rule of the protos
becomes a route that a request of its own shape reaches, with its variables bound;
nothing is silently left out; query strings and bodies build the request the way
HTTP/JSON transcoding does."""

from __future__ import annotations

import re
from datetime import timedelta

import grpc
import pytest
from commerce.customers.v1 import customer_service_pb2
from commerce.orders.v1 import order_pb2, order_service_pb2
from connectrpc._protocol import ConnectWireError
from connectrpc.code import Code
from google.api import http_pb2
from google.protobuf import any_pb2
from google.protobuf.descriptor import ServiceDescriptor
from google.rpc import error_details_pb2, status_pb2

from services.core.domain.errors import InvalidArgument
from services.core.http.errors import HTTP_STATUSES, status_http
from services.core.http.routes import Route, UnsupportedRule, parse_rule, route_table
from services.core.http.transcoding import build_request
from tests.descriptors import commerce_files, http_rule, methods

SERVICES: list[ServiceDescriptor] = [
    service for file in commerce_files() for service in file.services_by_name.values()
]
TABLE = route_table(SERVICES)
_VARIABLE = re.compile(r"\{([^}=]+)(?:=\*)?\}")


def _sample_path(template: str) -> tuple[str, dict[tuple[str, ...], str]]:
    """The template with a distinct number for each variable, and those numbers."""
    values: dict[tuple[str, ...], str] = {}

    def number(variable: re.Match[str]) -> str:
        values[tuple(variable.group(1).split("."))] = str(len(values) + 11)
        return values[tuple(variable.group(1).split("."))]

    return _VARIABLE.sub(number, template), values


def test_every_http_rule_of_the_protos_is_served():
    assert TABLE.unsupported == []
    rules = [(method, http_rule(method)) for method in methods(commerce_files())]
    assert all(rule is not None for _, rule in rules)  # each RPC declares one
    assert len(TABLE.routes) == len(rules)
    for method, rule in rules:
        assert rule is not None
        pattern = rule.WhichOneof("pattern")
        assert pattern is not None
        path, values = _sample_path(getattr(rule, pattern))
        match = TABLE.match(pattern.upper(), path)
        assert match is not None, path
        assert match.route is not None, path
        assert match.route.method.full_name == method.full_name
        assert dict(match.bindings) == values


def test_a_path_served_for_other_methods_says_which():
    match = TABLE.match("DELETE", "/v1/stores/1/customers/2")
    assert match is not None
    assert match.route is None
    assert match.allowed == ("GET", "PATCH")
    assert TABLE.match("GET", "/v1/stores/1/customers/2/nowhere") is None
    assert TABLE.match("GET", "/v1/stores//customers") is None  # an empty variable


def test_a_custom_verb_and_a_variable_holding_a_colon_are_told_apart():
    recent = TABLE.match("GET", "/v1/stores/1/customers/2/orders:recent")
    assert recent is not None
    assert recent.route is not None
    assert recent.route.method.name == "GetRecentCustomerOrders"
    # Without such a verb the colon is the variable's (here: no integer, refused later).
    odd = TABLE.match("GET", "/v1/stores/1/customers/a:b")
    assert odd is not None
    assert odd.route is not None
    assert odd.route.method.name == "GetCustomer"
    assert dict(odd.bindings)[("customer_id",)] == "a:b"
    escaped = TABLE.match("GET", "/v1/stores/1/customers/a%2Fb")
    assert escaped is not None
    assert dict(escaped.bindings)[("customer_id",)] == "a/b"


@pytest.mark.parametrize(
    "template",
    [
        "/v1/stores/{store_id=**}/customers",
        "/v1/{store_id=stores/*}/customers",
        "/v1/stores/{store_id}/**",
        "/v1/stores/{no_such_field}",
        "/v1/stores/{store_id}/customers/{customer_ids}",  # repeated: no path variable
        "v1/stores",
    ],
)
def test_a_rule_the_gateway_cannot_serve_is_reported(template):
    method = customer_service_pb2.DESCRIPTOR.services_by_name["CustomerService"].methods_by_name[
        "BatchGetCustomers"
    ]
    with pytest.raises(UnsupportedRule):
        parse_rule(method, http_pb2.HttpRule(get=template))


def _route(service: str, name: str) -> Route:
    return next(
        route
        for route in TABLE.routes
        if route.method.name == name and route.method.containing_service.name == service
    )


def test_the_query_string_sets_the_other_fields():
    route = _route("OrderService", "ListOrders")
    query = (
        b"pageSize=10&statuses=ORDER_STATUS_PAID&statuses=3&page_token=abc"
        b"&createTimeStart=2026-01-01T00:00:00Z&guestsOnly=true"
    )
    request = build_request(route, [(("store_id",), "7")], query, b"")
    assert isinstance(request, order_service_pb2.ListOrdersRequest)
    assert request.store_id == 7
    assert request.page_size == 10
    assert list(request.statuses) == [order_pb2.ORDER_STATUS_PAID, 3]
    assert request.page_token == "abc"
    assert request.create_time_start.ToJsonString() == "2026-01-01T00:00:00Z"
    assert request.guests_only is True


def test_a_field_mask_comes_from_the_query_and_a_named_body_fills_its_field():
    route = _route("CustomerService", "UpdateCustomer")
    bindings = [(("store_id",), "1"), (("customer_id",), "2")]
    body = b'{"firstName": "Ann", "phone": "+1 555"}'
    request = build_request(route, bindings, b"updateMask=firstName,phone", body)
    assert isinstance(request, customer_service_pb2.UpdateCustomerRequest)
    assert (request.store_id, request.customer_id) == (1, 2)
    assert list(request.update_mask.paths) == ["first_name", "phone"]
    assert (request.customer.first_name, request.customer.phone) == ("Ann", "+1 555")


def _violation(error: pytest.ExceptionInfo[InvalidArgument]) -> str:
    return error.value.violations[0].field


@pytest.mark.parametrize(
    ("query", "field"),
    [
        (b"pageSize=ten", "page_size"),
        (b"nonsense=1", "nonsense"),
        (b"storeId=3", "store_id"),  # the path's
        (b"pageSize=1&pageSize=2", "page_size"),
        (b"statuses=ORDER_STATUS_LOST", "statuses"),
        (b"createTimeStart=yesterday", "create_time_start"),
        (b"guestsOnly=perhaps", "guests_only"),
    ],
)
def test_a_bad_query_parameter_is_invalid_argument_naming_it(query, field):
    route = _route("OrderService", "ListOrders")
    with pytest.raises(InvalidArgument) as error:
        build_request(route, [(("store_id",), "7")], query, b"")
    assert _violation(error) == field


def test_the_query_string_cannot_set_what_the_body_field_or_the_path_sets():
    route = _route("CustomerService", "UpdateCustomer")
    bindings = [(("store_id",), "1"), (("customer_id",), "2")]
    for query, field in (
        (b"customer.firstName=Ann", "customer.first_name"),
        (b"storeId=1", "store_id"),
    ):
        with pytest.raises(InvalidArgument) as error:
            build_request(route, bindings, query, b"{}")
        assert _violation(error) == field


def test_a_path_variable_must_be_of_its_fields_type_and_agree_with_the_body():
    get = _route("CustomerService", "GetCustomer")
    with pytest.raises(InvalidArgument) as error:
        build_request(get, [(("store_id",), "1"), (("customer_id",), "x1")], b"", b"")
    assert _violation(error) == "customer_id"
    create = _route("CustomerService", "CreateCustomer")
    agreeing = build_request(create, [(("store_id",), "1")], b"", b'{"storeId": "1"}')
    assert agreeing.store_id == 1  # type: ignore[attr-defined]
    with pytest.raises(InvalidArgument) as error:
        build_request(create, [(("store_id",), "1")], b"", b'{"storeId": 2}')
    assert _violation(error) == "store_id"
    with pytest.raises(InvalidArgument) as error:  # body "*": no query parameters
        build_request(create, [(("store_id",), "1")], b"email=a@example.com", b"{}")
    assert _violation(error) == "email"


def test_a_misspelt_body_field_is_refused_as_the_connect_path_refuses_it():
    create = _route("CustomerService", "CreateCustomer")
    with pytest.raises(InvalidArgument) as error:
        build_request(create, [(("store_id",), "1")], b"", b'{"emial": "a@example.com"}')
    assert error.value.reason == "MALFORMED_REQUEST"
    assert "emial" in error.value.message


ERROR_CODES = [code for code in grpc.StatusCode if code is not grpc.StatusCode.OK]


@pytest.mark.parametrize("code", ERROR_CODES)
def test_rest_and_connect_answer_a_status_with_the_same_http_status(code):
    connect_code = Code.CANCELED if code is grpc.StatusCode.CANCELLED else Code[code.name]
    connect = ConnectWireError(connect_code, "", ()).to_http_status().code
    assert HTTP_STATUSES[code] == connect


def test_a_retry_info_and_unauthenticated_advise_the_http_client():
    retry = error_details_pb2.RetryInfo()
    retry.retry_delay.FromTimedelta(timedelta(milliseconds=1200))
    packed = any_pb2.Any()
    packed.Pack(retry)
    busy = status_pb2.Status(code=grpc.StatusCode.UNAVAILABLE.value[0], details=[packed])
    assert status_http(busy) == (503, [("retry-after", "2")])
    unknown_caller = status_pb2.Status(code=grpc.StatusCode.UNAUTHENTICATED.value[0])
    assert status_http(unknown_caller) == (401, [("www-authenticate", "Bearer")])
