"""The field annotations of the protos, read from the descriptors, as clients and
generators read them: every field states its google.api.field_behavior, every
request names its store as REQUIRED, passwords are debug_redact, idempotency keys
are UUID4, resource names are IDENTIFIER, and nothing is both OUTPUT_ONLY and
REQUIRED.

`field_behavior_problems` is run on the real descriptors and on edited copies
loaded into a pool of their own, so each rule is seen to fail."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest
from google.api import field_behavior_pb2, field_info_pb2
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor, FileDescriptor

from tests.descriptors import (
    IDENTIFIER,
    OUTPUT_ONLY,
    REQUIRED,
    behavior_names,
    behaviors,
    commerce_files,
    editable_copies,
    field_proto,
    message_proto,
    messages,
    rebuilt,
    request_messages,
    response_messages,
)
from tests.process import ROOT

Copies = dict[str, descriptor_pb2.FileDescriptorProto]


def field_behavior_problems(files: Sequence[FileDescriptor]) -> list[str]:
    """Every broken field rule in `files`, one line each, naming the field."""
    requests = request_messages(files)
    responses = response_messages(files)
    problems: list[str] = []
    for message in messages(files):
        is_request = message.full_name in requests
        is_resource = _is_resource(message, requests, responses)
        if is_request and "store_id" not in message.fields_by_name:
            problems.append(f"{message.full_name}: a request without store_id")
        for field in message.fields:
            problems += _field_problems(field, is_request=is_request, is_resource=is_resource)
    return problems


def _is_resource(
    message: Descriptor, requests: dict[str, Descriptor], responses: dict[str, Descriptor]
) -> bool:
    """A resource is a message a store owns (it carries store_id) and that names
    itself (`name`); requests and responses carry store_id too but are no resource."""
    fields = message.fields_by_name
    return (
        "store_id" in fields
        and "name" in fields
        and message.full_name not in requests
        and message.full_name not in responses
    )


def _field_problems(field: FieldDescriptor, *, is_request: bool, is_resource: bool) -> list[str]:
    name = field.full_name
    found = behaviors(field)
    problems = []
    if not found:
        problems.append(f"{name}: no google.api.field_behavior")
    if OUTPUT_ONLY in found and REQUIRED in found:
        problems.append(f"{name}: both OUTPUT_ONLY and REQUIRED")
    if is_request and field.name == "store_id" and REQUIRED not in found:
        problems.append(
            f"{name}: store_id of a request must be REQUIRED, is {behavior_names(field)}"
        )
    if is_resource and field.name == "name" and IDENTIFIER not in found:
        problems.append(f"{name}: a resource's name must be IDENTIFIER, is {behavior_names(field)}")
    options = field.GetOptions()
    if _is_password(field) and not options.debug_redact:
        problems.append(f"{name}: a password without debug_redact")
    if field.name == "request_id":
        format_ = options.Extensions[field_info_pb2.field_info].format
        if format_ != field_info_pb2.FieldInfo.UUID4:
            problems.append(f"{name}: a request_id without google.api.field_info format UUID4")
    return problems


def _is_password(field: FieldDescriptor) -> bool:
    """A field that holds a password (`has_password`, a flag, holds none)."""
    named = field.name == "password" or field.name.endswith("_password")
    return named and field.type in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES)


def test_the_protos_break_no_field_rule():
    assert field_behavior_problems(commerce_files()) == []


def test_every_proto_file_is_found_in_the_generated_package():
    """The walk of the generated package sees every proto there is, so the checks
    here cover a new file the day it is added (and generated)."""
    protos = ROOT / "protos"
    sources = {str(path.relative_to(protos)) for path in protos.rglob("*.proto")}
    assert {file.name for file in commerce_files()} == sources


def _drop_behavior(copies: Copies) -> None:
    field_proto(copies, "commerce.customers.v1.CreateCustomerRequest.email").options.ClearExtension(
        field_behavior_pb2.field_behavior
    )


def _optional_store_id(copies: Copies) -> None:
    behaviors = field_proto(
        copies, "commerce.orders.v1.GetOrderRequest.store_id"
    ).options.Extensions[field_behavior_pb2.field_behavior]
    del behaviors[:]
    behaviors.append(field_behavior_pb2.OPTIONAL)


def _request_without_store_id(copies: Copies) -> None:
    message = message_proto(copies, "commerce.loyalty.v1.GetCustomerLoyaltyRequest")
    kept = [field for field in message.field if field.name != "store_id"]
    del message.field[:]
    message.field.extend(kept)


def _password_in_clear(copies: Copies) -> None:
    field = field_proto(copies, "commerce.customers.v1.ChangeCustomerPasswordRequest.new_password")
    field.options.ClearField("debug_redact")


def _request_id_without_format(copies: Copies) -> None:
    field = field_proto(copies, "commerce.orders.v1.PayOrderRequest.request_id")
    field.options.ClearExtension(field_info_pb2.field_info)


def _name_not_identifier(copies: Copies) -> None:
    behaviors = field_proto(copies, "commerce.orders.v1.Order.name").options.Extensions[
        field_behavior_pb2.field_behavior
    ]
    del behaviors[:]
    behaviors.append(field_behavior_pb2.OUTPUT_ONLY)


def _output_only_and_required(copies: Copies) -> None:
    field_proto(copies, "commerce.customers.v1.Customer.create_time").options.Extensions[
        field_behavior_pb2.field_behavior
    ].append(field_behavior_pb2.REQUIRED)


def _new_file_without_behaviors(copies: Copies) -> None:
    """A proto added later: checked like the others, with nothing to register."""
    new = descriptor_pb2.FileDescriptorProto(
        name="commerce/gifts/v1/gift.proto", package="commerce.gifts.v1", syntax="proto3"
    )
    gift = new.message_type.add(name="Gift")
    gift.field.add(
        name="note",
        number=1,
        type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
        label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
    )
    copies[new.name] = new


@pytest.mark.parametrize(
    ("break_it", "problem"),
    [
        (_drop_behavior, "CreateCustomerRequest.email: no google.api.field_behavior"),
        (_optional_store_id, "GetOrderRequest.store_id: store_id of a request must be REQUIRED"),
        (_request_without_store_id, "GetCustomerLoyaltyRequest: a request without store_id"),
        (_password_in_clear, "ChangeCustomerPasswordRequest.new_password: a password without"),
        (_request_id_without_format, "PayOrderRequest.request_id: a request_id without"),
        (_name_not_identifier, "commerce.orders.v1.Order.name: a resource's name must be"),
        (_output_only_and_required, "Customer.create_time: both OUTPUT_ONLY and REQUIRED"),
        (_new_file_without_behaviors, "commerce.gifts.v1.Gift.note: no google.api.field_behavior"),
    ],
)
def test_each_rule_reports_the_field_that_breaks_it(
    break_it: Callable[[Copies], None], problem: str
) -> None:
    copies = editable_copies(commerce_files())
    break_it(copies)
    problems = field_behavior_problems(rebuilt(copies.values()))
    assert [line for line in problems if problem in line], problems
    assert len(problems) == 1, problems  # the edit, and nothing the rebuild lost
