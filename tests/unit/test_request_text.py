"""The text rule of every request (services.core.rpc.requests): NUL found at any
depth, in repeated fields and map entries, and named by its path."""

from __future__ import annotations

from commerce.orders.v1 import order_service_pb2
from google.protobuf import struct_pb2

from services.core.rpc.requests import Refusal, nul_fields, tolerant
from tests.e2e.helpers import line


def test_nul_is_found_at_every_depth_and_named_by_its_path():
    request = order_service_pb2.CreateOrderRequest(
        currency_code="EUR", line_items=[line(), line(sku="A\x00", name="Mug"), line(name="\x00")]
    )
    assert list(nul_fields(request)) == ["line_items[1].sku", "line_items[2].name"]


def test_map_keys_and_values_are_checked():
    struct = struct_pb2.Struct()
    struct.update({"fine": "text", "bad\x00key": "x", "nested": {"deep": "v\x00"}})
    assert sorted(nul_fields(struct)) == [
        "fields['bad\\x00key']",
        "fields['nested'].struct_value.fields['deep'].string_value",
    ]


def test_a_clean_request_passes_through_the_decoder_unchanged():
    body = order_service_pb2.CreateOrderRequest(currency_code="EUR", line_items=[line()])
    decode = tolerant(order_service_pb2.CreateOrderRequest.FromString, "CreateOrderRequest")
    assert decode(body.SerializeToString()) == body
    refused = decode(body.SerializeToString() + b"\x22\x01\x00")  # currency_code (4) "\0"
    assert isinstance(refused, Refusal)
    assert not refused.malformed
    assert isinstance(decode(b"\x22\x05EU"), Refusal)  # truncated
