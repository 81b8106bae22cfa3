"""A method a module does not serve (its generated servicer base answers for it) is
UNIMPLEMENTED, as gRPC defines it, not an internal error with a traceback in the
log: callers and dashboards can tell "not there" from "broken"."""

from __future__ import annotations

import logging

import grpc
import pytest
from commerce.customers.v1 import customer_service_pb2, customer_service_pb2_grpc

from services.core.rpc.interceptor import RpcInterceptor
from tests.errors import rpc_error


async def test_a_method_without_an_implementation_is_unimplemented(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = grpc.aio.server(interceptors=[RpcInterceptor()])
    # The generated base class: every method raises NotImplementedError.
    customer_service_pb2_grpc.add_CustomerServiceServicer_to_server(
        customer_service_pb2_grpc.CustomerServiceServicer(), server
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = customer_service_pb2_grpc.CustomerServiceStub(channel)
            with caplog.at_level(logging.INFO):
                failure = await rpc_error(
                    stub.GetCustomer(customer_service_pb2.GetCustomerRequest(store_id=1)),
                    grpc.StatusCode.UNIMPLEMENTED,
                )
    finally:
        await server.stop(0)
    assert failure.message == "method not implemented"
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]
