"""commerce.client's service config, held to the protos: it names only RPCs that
exist, every RPC is in exactly one of its tables, every read (an RPC mapped to HTTP
GET) is retried, and exactly the writes whose request carries a `request_id` (which
the server deduplicates) are retried among the writes."""

from __future__ import annotations

import json
from collections.abc import Iterable

import grpc
import pytest
from commerce import client
from google.protobuf.descriptor import MethodDescriptor
from grpc_health.v1 import health_pb2

from tests.descriptors import commerce_files, http_rule, methods
from tests.process import ROOT

Method = tuple[str, str]

TABLES = {
    "READS": client.READS,
    "STREAMED_READS": client.STREAMED_READS,
    "DEDUPLICATED_WRITES": client.DEDUPLICATED_WRITES,
    "OTHER_WRITES": client.OTHER_WRITES,
}


def _key(method: MethodDescriptor) -> Method:
    return (method.containing_service.full_name, method.name)


def _commerce_methods() -> dict[Method, MethodDescriptor]:
    return {_key(method): method for method in methods(commerce_files())}


def _health_methods() -> dict[Method, MethodDescriptor]:
    return {
        _key(method): method for method in health_pb2.DESCRIPTOR.services_by_name["Health"].methods
    }


def _configured(config: dict) -> list[tuple[Method, dict]]:
    """Each name of the config's methodConfig, with the entry that names it."""
    return [
        ((name["service"], name["method"]), entry)
        for entry in config["methodConfig"]
        for name in entry["name"]
    ]


def _all(tables: Iterable[tuple[Method, ...]]) -> list[Method]:
    return [method for table in tables for method in table]


def test_every_method_named_exists_and_every_rpc_has_one_place():
    served = _commerce_methods() | _health_methods()
    named = _all(TABLES.values())
    assert sorted(set(named) - set(served)) == []
    assert sorted(set(served) - set(named)) == [], "classify the new RPC in commerce.client"
    assert len(named) == len(set(named)), "an RPC in two tables"


def test_every_read_is_retried_and_only_the_streams_lack_a_deadline():
    rpcs = _commerce_methods()
    reads = {
        key for key, method in rpcs.items() if http_rule(method).WhichOneof("pattern") == "get"
    }
    assert reads | set(_health_methods()) == set(client.READS) | set(client.STREAMED_READS)
    everything = rpcs | _health_methods()
    streamed = {key for key, method in everything.items() if method.server_streaming}
    assert set(client.STREAMED_READS) == streamed

    for method, entry in _configured(client.service_config()):
        if method in client.READS:
            assert entry["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]
            assert entry["timeout"] == "10s"
        if method in client.STREAMED_READS:
            assert "retryPolicy" in entry
            assert "timeout" not in entry


def test_only_writes_the_server_deduplicates_are_retried():
    rpcs = _commerce_methods()
    with_request_id = {
        key for key, method in rpcs.items() if "request_id" in method.input_type.fields_by_name
    }
    assert set(client.DEDUPLICATED_WRITES) == with_request_id

    for retry_writes in (True, False):
        config = client.service_config(retry_writes=retry_writes)
        for method, entry in _configured(config):
            if method in client.OTHER_WRITES:
                assert "retryPolicy" not in entry, method
                assert entry["timeout"] == "30s"
            if method in client.DEDUPLICATED_WRITES:
                assert ("retryPolicy" in entry) is retry_writes, method
                assert entry["timeout"] == "30s"


def test_the_config_is_valid_json_naming_each_method_once_with_round_robin():
    config = json.loads(json.dumps(client.service_config(read_timeout=2.5)))
    names = [method for method, _ in _configured(config)]
    # gRPC rejects a whole service config that names a method twice.
    assert len(names) == len(set(names))
    assert set(names) == set(_all(TABLES.values()))
    assert config["loadBalancingConfig"] == [{"round_robin": {}}]
    assert config["retryThrottling"] == {"maxTokens": 100, "tokenRatio": 0.1}
    assert {entry.get("timeout") for entry in config["methodConfig"]} == {"2.5s", None, "30s"}
    policy = client.RETRY_POLICY
    assert 2 <= policy["maxAttempts"] <= 5  # gRPC caps attempts at 5


@pytest.mark.parametrize(
    ("addresses", "expected"),
    [
        ("commerce.internal:50051", "dns:///commerce.internal:50051"),
        ("dns:///commerce.internal:50051", "dns:///commerce.internal:50051"),
        ("unix:/run/commerce.sock", "unix:/run/commerce.sock"),
        (["localhost:50051"], "dns:///localhost:50051"),
        (["10.0.0.1:50051", "10.0.0.2:50052"], "ipv4:10.0.0.1:50051,10.0.0.2:50052"),
        (["[::1]:50051", "[fd00::2]:50051"], "ipv6:[::1]:50051,[fd00::2]:50051"),
    ],
)
def test_addresses_become_one_target(addresses, expected):
    assert client.target(addresses) == expected


@pytest.mark.parametrize(
    "addresses",
    [[], ["a.internal:1", "b.internal:1"], ["10.0.0.1:1", "[::1]:1"], ["10.0.0.1", "10.0.0.2:1"]],
)
def test_a_list_that_gives_no_target_is_refused(addresses):
    with pytest.raises(ValueError, match="address"):
        client.target(addresses)


def test_a_token_without_tls_is_refused():
    with pytest.raises(ValueError, match="TLS"):
        client.connect_sync(["127.0.0.1:1", "127.0.0.2:1"], token="secret")
    channel = client.connect_sync(
        ["127.0.0.1:1"], credentials=grpc.ssl_channel_credentials(), token="secret"
    )
    channel.close()


def test_the_published_json_is_the_config_the_python_channel_uses():
    """clients/service_config.json, for clients in other languages, is the same."""
    published = json.loads((ROOT / "clients" / "service_config.json").read_text())
    assert published == client.service_config(), (
        "stale: python -m commerce.client > clients/service_config.json"
    )
