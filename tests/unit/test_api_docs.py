"""docs/api.md against the protos: every RPC is listed with the HTTP mapping its
`google.api.http` option gives, and every JSON example in it is canonical proto3 JSON
of a known message type, as `json_format.Parse` reads it (unknown fields refused).

How an example names its type (the guide's convention):
- a ```json block names it after the language: ```json commerce.orders.v1.Order
- a grpcurl `-d '...'` body is the request of the method the command calls;
- a curl `-d '...'` body is what the HTTP rule matching its verb and path takes:
  the whole request (`body: "*"`) or the field the rule names; at a Connect path
  (`/package.Service/Method`), the method's request.
Any other JSON object in the guide (a bare block, an inline `{...}`) has no type and
fails the test."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc_health.v1.health_pb2  # noqa: F401  (registers the health messages)
import pytest
from commerce.customers.v1 import customer_service_pb2
from commerce.events.v1 import event_service_pb2
from commerce.loyalty.v1 import customer_loyalty_service_pb2
from commerce.orders.v1 import customer_order_service_pb2, order_service_pb2
from google.api import annotations_pb2
from google.protobuf import descriptor_pool, json_format, message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2  # noqa: F401  (Any details in examples)

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "api.md"
MAPPINGS_SECTION = "Methods and their HTTP mappings"

SERVICES: list[ServiceDescriptor] = [
    customer_service_pb2.DESCRIPTOR.services_by_name["CustomerService"],
    order_service_pb2.DESCRIPTOR.services_by_name["OrderService"],
    customer_order_service_pb2.DESCRIPTOR.services_by_name["CustomerOrderService"],
    customer_loyalty_service_pb2.DESCRIPTOR.services_by_name["CustomerLoyaltyService"],
    event_service_pb2.DESCRIPTOR.services_by_name["EventService"],
]


# --- HTTP mappings -----------------------------------------------------------------


@dataclass(frozen=True)
class Mapping:
    verb: str
    path: str
    body: str  # "" (none), "*" (the whole request) or a request field's name


def annotated_mapping(method: MethodDescriptor) -> Mapping:
    rule = method.GetOptions().Extensions[annotations_pb2.http]
    pattern = rule.WhichOneof("pattern")
    assert pattern in {"get", "post", "patch", "put", "delete"}, method.full_name
    assert not rule.additional_bindings, f"{method.full_name}: document its other bindings"
    return Mapping(pattern.upper(), getattr(rule, pattern), rule.body)


def annotated_mappings() -> dict[tuple[str, str], Mapping]:
    return {
        (service.name, method.name): annotated_mapping(method)
        for service in SERVICES
        for method in service.methods
    }


ROW = re.compile(
    r"^\|\s*`(?P<rpc>\w+)`[^|]*\|\s*`(?P<verb>[A-Z]+) (?P<path>[^`\s]+)`\s*\|"
    r"\s*(?:`(?P<body>[^`]+)`)?\s*\|"
)


def documented_mappings(guide: str) -> dict[tuple[str, str], Mapping]:
    """The rows `| `Rpc` | `VERB path` | `body` | ... |` of the mappings section, each
    under the `### Service` heading it follows. A row listed twice fails."""
    section = guide.split(f"\n## {MAPPINGS_SECTION}\n", 1)[1].split("\n## ", 1)[0]
    service = None
    rows: dict[tuple[str, str], Mapping] = {}
    for line in section.splitlines():
        if line.startswith("### "):
            service = line.removeprefix("### ").strip("` ")
        elif (row := ROW.match(line)) is not None:
            assert service is not None, f"a mapping before any service heading: {line}"
            key = (service, row["rpc"])
            assert key not in rows, f"{key} listed twice"
            rows[key] = Mapping(row["verb"], row["path"], row["body"] or "")
    return rows


def mapping_problems(guide: str) -> list[str]:
    documented = documented_mappings(guide)
    problems = []
    for key, mapping in annotated_mappings().items():
        shown = documented.get(key)
        if shown is None:
            problems.append(f"{key[0]}.{key[1]} is missing")
        elif shown != mapping:
            problems.append(f"{key[0]}.{key[1]}: documented {shown}, annotated {mapping}")
    problems += [f"{s}.{r} is no RPC" for s, r in documented.keys() - annotated_mappings().keys()]
    return problems


def test_every_rpc_is_listed_with_its_http_mapping():
    assert mapping_problems(GUIDE.read_text()) == []


def test_a_wrong_or_missing_mapping_is_caught():
    guide = GUIDE.read_text()
    pay = "`POST /v1/stores/{store_id}/orders/{order_id}:pay`"
    assert pay in guide
    order = "/v1/stores/{store_id}/orders/{order_id}"
    assert mapping_problems(guide.replace(pay, pay.replace(":pay", ":payNow"))) == [
        f"OrderService.PayOrder: documented Mapping(verb='POST', path='{order}:payNow', "
        f"body='*'), annotated Mapping(verb='POST', path='{order}:pay', body='*')"
    ]
    without_pay = "\n".join(
        line for line in guide.splitlines() if not line.startswith("| `PayOrder`")
    )
    assert mapping_problems(without_pay) == ["OrderService.PayOrder is missing"]


# --- JSON examples -----------------------------------------------------------------


@dataclass(frozen=True)
class Example:
    where: str  # for the failure message: the line the example starts on
    text: str
    type_name: str | None  # None: the guide gives no way to know its type


FENCE = re.compile(r"^```(?P<info>[^\n]*)\n(?P<body>.*?)^```", re.MULTILINE | re.DOTALL)
INLINE_OBJECT = re.compile(r"`(\{\s*\"[^`]*\})`")
GRPC_METHOD = re.compile(r"^(?P<service>[\w.]+)/(?P<method>\w+)$")
CONNECT_PATH = re.compile(r"/(?P<service>[\w.]+)/(?P<method>\w+)")


def examples(guide: str) -> Iterator[Example]:
    for block in FENCE.finditer(guide):
        line = guide.count("\n", 0, block.start()) + 1
        language, _, type_name = block["info"].strip().partition(" ")
        body = block["body"]
        if language == "json":
            yield Example(f"line {line}", body, type_name.strip() or None)
        elif language in {"sh", "bash", "shell", "console"}:
            yield from command_examples(body, line)
        elif body.lstrip().startswith(("{", "[")):
            yield Example(f"line {line}", body, None)
    prose = FENCE.sub("", guide)
    for inline in INLINE_OBJECT.finditer(prose):
        yield Example(f"inline {inline[1]}", inline[1], None)


def command_examples(script: str, first_line: int) -> Iterator[Example]:
    """The `-d` bodies of the grpcurl and curl commands of a shell block."""
    for number, line in enumerate(script.replace("\\\n", " ").splitlines(), first_line + 1):
        command = line.split(" #", 1)[0].split(" || ", 1)[0].strip()
        if "{" not in command:
            continue
        words = shlex.split(command)
        bodies = [words[i + 1] for i, word in enumerate(words[:-1]) if word in {"-d", "--data"}]
        where = f"line {number}"
        if not bodies:
            yield Example(where, command, None)  # JSON somewhere, but not as a body
        elif words[0] in {"$G", "grpcurl"} or words[0].endswith("/grpcurl"):
            yield Example(where, bodies[0], grpcurl_body_type(words))
        elif words[0] == "curl":
            yield Example(where, bodies[0], curl_body_type(words))
        else:
            yield Example(where, bodies[0], None)


def grpcurl_body_type(words: list[str]) -> str | None:
    method = next((m for word in words if (m := GRPC_METHOD.match(word))), None)
    if method is None:
        return None
    pool = descriptor_pool.Default()
    try:
        service = pool.FindServiceByName(method["service"])
    except KeyError:
        return None
    found = service.methods_by_name.get(method["method"])
    return None if found is None else found.input_type.full_name


def curl_body_type(words: list[str]) -> str | None:
    """The message a curl body is: the HTTP rule with its verb and a path template that
    matches its URL says which."""
    verb = next(
        (words[i + 1] for i, w in enumerate(words[:-1]) if w in {"-X", "--request"}), "POST"
    )
    url = next((w for w in words if w.startswith(("http://", "https://"))), None)
    if url is None:
        return None
    path = "/" + url.split("://", 1)[1].split("/", 1)[-1].split("?", 1)[0]
    if connect := CONNECT_PATH.fullmatch(path):  # the Connect protocol: /package.Service/Method
        return grpcurl_body_type([f"{connect['service']}/{connect['method']}"])
    for service in SERVICES:
        for method in service.methods:
            mapping = annotated_mapping(method)
            template = re.sub(r"\\\{\w+\\\}", "[^/:]+", re.escape(mapping.path))
            if mapping.verb == verb.upper() and re.fullmatch(template, path):
                if mapping.body == "*":
                    return str(method.input_type.full_name)
                field = method.input_type.fields_by_name.get(mapping.body)
                return None if field is None else str(field.message_type.full_name)
    return None


def parse(example: Example) -> Message:
    """The example as its message, parsed as canonical proto3 JSON; raises when it is
    untyped, of an unknown type, or not valid JSON of that type."""
    if example.type_name is None:
        raise ValueError(f"{example.where}: a JSON example of no known type: {example.text}")
    descriptor = descriptor_pool.Default().FindMessageTypeByName(example.type_name)
    message = message_factory.GetMessageClass(descriptor)()
    json_format.Parse(example.text, message)
    return message


def example_problems(guide: str) -> list[str]:
    problems = []
    for example in examples(guide):
        try:
            parse(example)
        except (ValueError, KeyError, json_format.ParseError) as error:
            problems.append(f"{example.where} ({example.type_name}): {error}")
    return problems


def test_every_json_example_is_canonical_json_of_its_message():
    guide = GUIDE.read_text()
    found = list(examples(guide))
    typed = {example.type_name for example in found}
    # The guide's examples reach every service and show answers as well as requests.
    assert "commerce.orders.v1.PayOrderRequest" in typed
    assert "google.rpc.Status" in typed
    assert len(found) >= 40
    assert example_problems(guide) == []


def test_a_field_mask_written_as_an_object_is_refused():
    """The form grpcurl takes and canonical JSON refuses (FieldMask is a string there)."""
    guide = (
        "```json commerce.customers.v1.UpdateCustomerRequest\n"
        '{"updateMask": {"paths": ["firstName"]}}\n'
        "```\n"
    )
    [problem] = example_problems(guide)
    assert "FieldMask JSON value not a string" in problem
    fixed = guide.replace('{"paths": ["firstName"]}', '"firstName,phone"')
    assert example_problems(fixed) == []
    assert parse(next(examples(fixed))) == customer_service_pb2.UpdateCustomerRequest(
        update_mask={"paths": ["first_name", "phone"]}
    )


@pytest.mark.parametrize(
    ("guide", "expected"),
    [
        ("```json\n{}\n```\n", "of no known type"),
        ("```\n{}\n```\n", "of no known type"),
        ('Send `{"storeId": "7"}`.\n', "of no known type"),
        ("```json commerce.orders.v1.NoSuchMessage\n{}\n```\n", "NoSuchMessage"),
        ('```json commerce.orders.v1.Order\n{"orderId": 7, "colour": 1}\n```\n', "colour"),
        ('```sh\n$G -d \'{"storeId": "1"}\' localhost:50051 x.v1.Nope/Call\n```\n', "no known"),
        (
            '```sh\ncurl -d \'{"etag": "r1"}\' http://localhost:8080/v1/stores/1/orders/1:payy\n```\n',
            "no known type",
        ),
        ('```sh\necho \'{"storeId": "1"}\'\n```\n', "of no known type"),
    ],
)
def test_an_example_of_unknown_type_or_shape_is_refused(guide, expected):
    [problem] = example_problems(guide)
    assert expected in problem


def test_grpcurl_and_curl_bodies_take_the_type_their_call_names():
    guide = (
        "```sh\n"
        '$G -d \'{"storeId": "1", "orderId": "2", "etag": "r1"}\' \\\n'
        "  localhost:50051 commerce.orders.v1.OrderService/PayOrder\n"
        'curl -X PATCH -d \'{"city": "Potsdam"}\' '
        "http://localhost:8080/v1/stores/1/customers/1/addresses/1\n"
        'curl -d \'{"reason": "out of stock"}\' http://localhost:8080/v1/stores/1/orders/2:cancel\n'
        "```\n"
    )
    assert [example.type_name for example in examples(guide)] == [
        "commerce.orders.v1.PayOrderRequest",
        "commerce.customers.v1.CustomerAddress",
        "commerce.orders.v1.CancelOrderRequest",
    ]
    assert example_problems(guide) == []


def heading_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to -."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_link_within_the_guide_reaches_a_heading():
    guide = GUIDE.read_text()
    anchors = {heading_anchor(h) for h in re.findall(r"^#{2,4} (.+)$", guide, re.MULTILINE)}
    links = set(re.findall(r"\]\(#([\w-]+)\)", guide))
    assert links
    assert links - anchors == set()
    assert heading_anchor("Orders: status changes") == "orders-status-changes"
