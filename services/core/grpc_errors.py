"""The one place where errors become gRPC statuses.

Domain errors get their code and rich details (google.rpc.ErrorInfo always,
BadRequest for invalid arguments, ResourceInfo for missing resources). A lost
database is UNAVAILABLE, so callers may retry. Anything else is a bug: it is logged
with its traceback and the caller gets INTERNAL with no detail."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias, cast

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from sqlalchemy import exc as sa_exc

from services.core.errors import (
    Aborted,
    AlreadyExists,
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unauthenticated,
)

logger = logging.getLogger(__name__)

_STATUS_CODES: dict[type[DomainError], grpc.StatusCode] = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    Aborted: grpc.StatusCode.ABORTED,
}

# Errors that mean "the database is out of reach", not "this request is wrong".
_UNAVAILABLE_ERRORS = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.TimeoutError,
    ConnectionError,
    OSError,
)

# Generic only in the type stubs, hence the quotes.
Behavior: TypeAlias = "Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]"
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"


def domain_of(method: str) -> str:
    """'/commerce.customers.v1.CustomerService/GetCustomer' -> 'commerce.customers.v1'."""
    service = method.lstrip("/").split("/", 1)[0]
    return service.rsplit(".", 1)[0]


def status_for(error: DomainError, domain: str) -> grpc.Status:
    code = _STATUS_CODES.get(type(error)) or next(
        code for kind, code in _STATUS_CODES.items() if isinstance(error, kind)
    )
    details = [
        error_details_pb2.ErrorInfo(reason=error.reason, domain=domain, metadata=error.metadata)
    ]
    if isinstance(error, InvalidArgument):
        details.append(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=v.field, description=v.description
                    )
                    for v in error.violations
                ]
            )
        )
    if isinstance(error, NotFound):
        details.append(
            error_details_pb2.ResourceInfo(
                resource_type=error.resource_type, resource_name=error.resource_name
            )
        )
    return _status(code, error.message, details)


def _status(code: grpc.StatusCode, message: str, details: list[Any]) -> grpc.Status:
    packed = []
    for detail in details:
        holder = any_pb2.Any()
        holder.Pack(detail)
        packed.append(holder)
    proto = status_pb2.Status(code=getattr(code_pb2, code.name), message=message, details=packed)
    return rpc_status.to_status(proto)


class ErrorMappingInterceptor(grpc.aio.ServerInterceptor):
    """Wraps every unary-unary handler so that no exception reaches grpc's own
    handling, which would answer UNKNOWN with the exception's text."""

    def __init__(self) -> None:
        self._wrapped: dict[str, Handler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        method = handler_call_details.method
        wrapped = self._wrapped.get(method)
        if wrapped is not None:
            return wrapped
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler  # streaming services (reflection, health) handle their own errors
        wrapped = grpc.unary_unary_rpc_method_handler(
            # grpc.aio calls the behaviours it registers with an aio context and awaits them.
            _map_errors(cast(Behavior, handler.unary_unary), domain_of(method)),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
        self._wrapped[method] = wrapped
        return wrapped


def _map_errors(behavior: Behavior, domain: str) -> Behavior:
    async def guarded(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            return await behavior(request, context)
        except DomainError as error:
            status = status_for(error, domain)
        except _UNAVAILABLE_ERRORS as error:
            logger.warning("database unavailable: %s", type(error).__name__)
            status = _status(grpc.StatusCode.UNAVAILABLE, "service temporarily unavailable", [])
        except grpc.aio.AbortError:
            raise
        except Exception:
            logger.exception("unexpected error in %s", domain)
            status = _status(grpc.StatusCode.INTERNAL, "internal error", [])
        await context.abort(status.code, status.details, status.trailing_metadata)

    return guarded
