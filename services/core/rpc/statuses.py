"""The one place where errors become gRPC statuses (applied by
services.core.rpc.interceptor).

Domain errors get their code and rich details (google.rpc.ErrorInfo always,
BadRequest for invalid arguments, ResourceInfo for missing resources). A lost
database is UNAVAILABLE, so callers may retry. Anything else is a bug: it is logged
with its traceback and the caller gets INTERNAL with no detail."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import Any

import asyncpg
import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from sqlalchemy import exc as sa_exc

from services.core.domain.errors import (
    Aborted,
    AlreadyExists,
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    OutOfRange,
    Overloaded,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
)

_STATUS_CODES: dict[type[DomainError], grpc.StatusCode] = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    OutOfRange: grpc.StatusCode.OUT_OF_RANGE,
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    Aborted: grpc.StatusCode.ABORTED,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
}

# Errors that mean "the database is out of reach", not "this request is wrong".
UNAVAILABLE_ERRORS = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    asyncpg.InterfaceError,  # on the fast path: "connection is closed", and the like
    ConnectionError,
    OSError,
)

# Every pooled connection stayed busy for the whole pool timeout: this process is
# overloaded (RESOURCE_EXHAUSTED), the database itself may be fine.
POOL_EXHAUSTED_ERRORS = (sa_exc.TimeoutError,)

# SQLSTATEs of a server that is gone or not ready: connection exceptions (class 08:
# "connection was closed in the middle of operation" is 08003) and operator
# intervention (57P01 admin shutdown, 57P02 crash shutdown, 57P03 still starting up).
_UNAVAILABLE_SQLSTATES = ("08", "57P")


def is_unavailable(error: BaseException) -> bool:
    """Whether an error means "the database is out of reach", looking through the
    chain of errors SQLAlchemy and the driver wrap around each other (a connection
    lost mid-statement arrives as a plain DBAPIError around the driver's error)."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [error]
    while pending:
        link = pending.pop()
        if link is None or id(link) in seen:
            continue
        seen.add(id(link))
        if isinstance(link, UNAVAILABLE_ERRORS):
            return True
        if isinstance(link, sa_exc.DBAPIError) and link.connection_invalidated:
            return True
        sqlstate = getattr(link, "sqlstate", None) or getattr(link, "pgcode", None)
        if isinstance(sqlstate, str) and sqlstate.startswith(_UNAVAILABLE_SQLSTATES):
            return True
        pending += [link.__cause__, link.__context__]
    return False


# PostgreSQL's query_canceled and lock_not_available: the statement and lock timeouts
# a transaction takes from the caller's deadline (services.core.db.unit_of_work).
_DEADLINE_SQLSTATES = {"57014", "55P03"}


def is_deadline_timeout(error: BaseException) -> bool:
    """Whether PostgreSQL stopped a statement at the timeout set from the deadline:
    as SQLAlchemy reports it, or as asyncpg does on the fast path (services.core.db.statements)."""
    driver_error = error.orig if isinstance(error, sa_exc.DBAPIError) else error
    code = getattr(driver_error, "pgcode", None) or getattr(driver_error, "sqlstate", None)
    return code in _DEADLINE_SQLSTATES


def domain_of(method: str) -> str:
    """'/commerce.customers.v1.CustomerService/GetCustomer' -> 'commerce.customers.v1'."""
    service = method.lstrip("/").split("/", 1)[0]
    return service.rsplit(".", 1)[0]


# The status travels in the trailers, which clients cap (gRPC C-core, hence Python:
# 8 KiB, counted as in HPACK). A request with thousands of bad fields still gets a
# status that fits: the first MAX_FIELD_VIOLATIONS, each cut to a bounded size, and
# the total in the message and in ErrorInfo's metadata (docs/api.md, Errors).
MAX_FIELD_VIOLATIONS = 10
MAX_FIELD_BYTES = 100
MAX_DESCRIPTION_BYTES = 120
MAX_MESSAGE_BYTES = 200


def status_for(error: DomainError, domain: str) -> grpc.Status:
    code = _STATUS_CODES.get(type(error)) or next(
        code for kind, code in _STATUS_CODES.items() if isinstance(error, kind)
    )
    metadata = dict(error.metadata)
    message = error.message
    details: list[Any] = []
    if isinstance(error, InvalidArgument):
        violations = error.violations
        shown = violations[:MAX_FIELD_VIOLATIONS]
        if len(violations) > len(shown):
            omitted = len(violations) - len(shown)
            metadata["field_violations"] = str(len(violations))
            metadata["field_violations_omitted"] = str(omitted)
            fields = ", ".join(_cut(v.field, MAX_FIELD_BYTES) for v in shown)
            message = (
                f"invalid request: {len(violations)} problems, {omitted} of them not "
                f"detailed; check {fields}"
            )
        details.append(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=_cut(v.field, MAX_FIELD_BYTES),
                        description=_cut(v.description, MAX_DESCRIPTION_BYTES),
                    )
                    for v in shown
                ]
            )
        )
    if isinstance(error, NotFound):
        details.append(
            error_details_pb2.ResourceInfo(
                resource_type=error.resource_type, resource_name=error.resource_name
            )
        )
    if isinstance(error, ResourceExhausted):
        if isinstance(error, Overloaded):
            domain = "commerce"  # the server's state, not the module's rules
        details.append(_retry_info(error.retry_after))
    info = error_details_pb2.ErrorInfo(reason=error.reason, domain=domain, metadata=metadata)
    return _status(code, _cut(message, MAX_MESSAGE_BYTES), [info, *details])


def _cut(text: str, limit: int) -> str:
    """`text` cut to at most `limit` bytes of UTF-8 (whole characters), marked with …"""
    encoded = text.encode("utf-8", "surrogatepass")
    if len(encoded) <= limit:
        return text
    return encoded[: limit - 3].decode("utf-8", "ignore") + "…"


def plain_status(code: grpc.StatusCode, message: str) -> grpc.Status:
    """A status with no detail beyond its message."""
    return _status(code, message, [])


def retry_status(
    code: grpc.StatusCode, message: str, *, reason: str, retry_after: timedelta
) -> grpc.Status:
    """A status that says: nothing was wrong with the request, try it again after
    `retry_after` (google.rpc.RetryInfo, which gRPC clients in every language read)."""
    return _status(
        code,
        message,
        [error_details_pb2.ErrorInfo(reason=reason, domain="commerce"), _retry_info(retry_after)],
    )


def _retry_info(retry_after: timedelta) -> error_details_pb2.RetryInfo:
    retry = error_details_pb2.RetryInfo()
    retry.retry_delay.FromTimedelta(retry_after)
    return retry


def status_message(
    code: grpc.StatusCode, message: str, details: Iterable[Any]
) -> status_pb2.Status:
    """The google.rpc.Status of `code` and `message`, with `details` packed."""
    packed = []
    for detail in details:
        holder = any_pb2.Any()
        holder.Pack(detail)
        packed.append(holder)
    return status_pb2.Status(code=getattr(code_pb2, code.name), message=message, details=packed)


def _status(code: grpc.StatusCode, message: str, details: list[Any]) -> grpc.Status:
    return rpc_status.to_status(status_message(code, message, details))
