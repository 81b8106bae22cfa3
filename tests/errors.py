"""Reading gRPC error statuses and their google.rpc details in tests."""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2


@dataclass
class RpcFailure:
    code: grpc.StatusCode
    message: str
    error_info: error_details_pb2.ErrorInfo | None = None
    bad_request: error_details_pb2.BadRequest | None = None
    resource_info: error_details_pb2.ResourceInfo | None = None
    retry_info: error_details_pb2.RetryInfo | None = None
    details: list[Any] = field(default_factory=list)

    @property
    def violated_fields(self) -> set[str]:
        assert self.bad_request is not None, "no BadRequest detail"
        return {violation.field for violation in self.bad_request.field_violations}


def parse(error: grpc.aio.AioRpcError | grpc.RpcError) -> RpcFailure:
    failure = RpcFailure(code=error.code(), message=error.details() or "")
    for key, value in error.trailing_metadata() or ():
        if key != "grpc-status-details-bin":
            continue
        status = status_pb2.Status.FromString(value)
        assert status.code == error.code().value[0]
        for packed in status.details:
            for kind, attribute in (
                (error_details_pb2.ErrorInfo, "error_info"),
                (error_details_pb2.BadRequest, "bad_request"),
                (error_details_pb2.ResourceInfo, "resource_info"),
                (error_details_pb2.RetryInfo, "retry_info"),
            ):
                if packed.Is(kind.DESCRIPTOR):
                    detail = kind()
                    packed.Unpack(detail)
                    setattr(failure, attribute, detail)
                    failure.details.append(detail)
    return failure


async def rpc_error(call: Awaitable[Any], code: grpc.StatusCode) -> RpcFailure:
    """Awaits a call that must fail with `code`, and returns what came back."""
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    failure = parse(raised.value)
    assert failure.code == code, f"expected {code}, got {failure.code}: {failure.message}"
    return failure
