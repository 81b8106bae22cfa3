"""Transport security: TLS from certificate files, and mutual TLS."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from commerce.customers.v1 import customer_service_pb2_grpc

from tests.certificates import Authority
from tests.e2e.helpers import pb
from tests.process import migrated_sqlite_env, running_server


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return migrated_sqlite_env(tmp_path, "TLS")


def list_customers(target: str, credentials: grpc.ChannelCredentials | None) -> grpc.StatusCode:
    channel = (
        grpc.secure_channel(target, credentials) if credentials else grpc.insecure_channel(target)
    )
    with channel:
        try:
            customer_service_pb2_grpc.CustomerServiceStub(channel).ListCustomers(
                pb.ListCustomersRequest(store_id=1), timeout=5
            )
        except grpc.RpcError as error:
            return error.code()
    return grpc.StatusCode.OK


def test_tls(tmp_path, env):
    authority = Authority(tmp_path)
    server_cert = authority.issue("server", server=True)
    trusting = grpc.ssl_channel_credentials(root_certificates=authority.pem)
    flags = ("--tls-cert-file", str(server_cert.cert), "--tls-key-file", str(server_cert.key))
    with running_server(tmp_path, env, *flags, credentials=trusting) as server:
        assert list_customers(server.target, trusting) == grpc.StatusCode.OK
        assert (
            list_customers(server.target, None) == grpc.StatusCode.UNAVAILABLE
        )  # plaintext refused
        (tmp_path / "elsewhere").mkdir()
        stranger = Authority(tmp_path / "elsewhere")
        untrusting = grpc.ssl_channel_credentials(root_certificates=stranger.pem)
        assert list_customers(server.target, untrusting) == grpc.StatusCode.UNAVAILABLE
    assert "(TLS)" in server.output()


def test_mutual_tls_requires_a_client_certificate_from_the_ca(tmp_path, env):
    authority = Authority(tmp_path)
    server_cert = authority.issue("server", server=True)
    client_cert = authority.issue("client", server=False)
    (tmp_path / "rogue").mkdir()
    rogue_authority = Authority(tmp_path / "rogue", "rogue CA")
    rogue_cert = rogue_authority.issue("rogue-client", server=False)
    flags = (
        "--tls-cert-file", str(server_cert.cert),
        "--tls-key-file", str(server_cert.key),
        "--tls-client-ca-file", str(authority.own.cert),
    )  # fmt: skip
    with_client = grpc.ssl_channel_credentials(authority.pem, *client_cert.pair())
    without_client = grpc.ssl_channel_credentials(authority.pem)
    with_rogue = grpc.ssl_channel_credentials(authority.pem, *rogue_cert.pair())
    with running_server(tmp_path, env, *flags, credentials=with_client) as server:
        assert list_customers(server.target, with_client) == grpc.StatusCode.OK
        assert list_customers(server.target, without_client) == grpc.StatusCode.UNAVAILABLE
        assert list_customers(server.target, with_rogue) == grpc.StatusCode.UNAVAILABLE
