"""The gateway's application: one Connect endpoint per unary method of the mounted
services, each forwarding its call to the process's own gRPC server (see the
package's docstring for why); every other path goes to the REST routes
(services.core.http.rest)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeAlias

import grpc
from connectrpc.code import Code
from connectrpc.errors import ConnectError
from connectrpc.method import IdempotencyLevel, MethodInfo, StreamType
from connectrpc.request import RequestContext
from connectrpc.server import ConnectASGIApplication, Endpoint
from google.protobuf import descriptor_pb2, message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message

from services.core.http.codecs import JsonCodec, PassThroughProtoCodec
from services.core.http.errors import connect_error, error_headers
from services.core.http.metadata import copy_metadata, metadata_from
from services.core.http.rest import RestGateway

logger = logging.getLogger(__name__)

Forward: TypeAlias = "Callable[[Any, RequestContext[Any, Any]], Awaitable[Message]]"
Scope: TypeAlias = "dict[str, Any]"
Send: TypeAlias = "Callable[[dict[str, Any]], Awaitable[None]]"

_IDEMPOTENCY = {
    descriptor_pb2.MethodOptions.IDEMPOTENCY_UNKNOWN: IdempotencyLevel.UNKNOWN,
    descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS: IdempotencyLevel.NO_SIDE_EFFECTS,
    descriptor_pb2.MethodOptions.IDEMPOTENT: IdempotencyLevel.IDEMPOTENT,
}


def request_metadata(ctx: RequestContext[Any, Any]) -> list[tuple[str, str | bytes]]:
    """The call's gRPC metadata, from the Connect request's headers and peer."""
    address = ctx.client_address.rpartition(":")[0] if ctx.client_address else None
    return metadata_from(ctx.request_headers.allitems(), address)


def _serialize(request: Message | bytes) -> bytes:
    """Binary requests arrive as bytes (PassThroughProtoCodec), JSON ones parsed."""
    return request if isinstance(request, bytes) else request.SerializeToString()


def forwarder(channel: grpc.aio.Channel, path: str, response_class: type[Message]) -> Forward:
    """The endpoint function of the method at `path`: the call, made over `channel`."""
    call_method = channel.unary_unary(
        path, request_serializer=_serialize, response_deserializer=response_class.FromString
    )

    async def forward(request: Any, ctx: RequestContext[Any, Any]) -> Message:
        remaining_ms = ctx.timeout_ms  # from connect-timeout-ms; None without one
        call = call_method(
            request,
            metadata=request_metadata(ctx),
            timeout=None if remaining_ms is None else max(remaining_ms, 0.0) / 1000,
        )
        try:
            response: Message = await call
        except grpc.aio.AioRpcError as failure:
            error = connect_error(
                failure.code(), failure.details() or "", failure.trailing_metadata()
            )
            for key, value in error_headers(error):
                ctx.response_headers[key] = value
            raise error from None
        except Exception:  # a bug of the gateway's: logged, never an UNKNOWN for the caller
            logger.exception("the HTTP gateway failed to forward a call of %s", path)
            raise ConnectError(Code.INTERNAL, "internal error") from None
        copy_metadata(await call.initial_metadata(), ctx.response_headers.add)
        # Connect's unary responses carry trailers as `trailer-` headers.
        copy_metadata(await call.trailing_metadata(), ctx.response_trailers.add)
        return response

    return forward


def idempotency_of(method: MethodDescriptor) -> IdempotencyLevel:
    """The method's `idempotency_level` option: NO_SIDE_EFFECTS methods may also be
    called with GET."""
    return _IDEMPOTENCY[method.GetOptions().idempotency_level]


def endpoints(
    channel: grpc.aio.Channel, services: Iterable[ServiceDescriptor]
) -> dict[str, Endpoint[Any, Any]]:
    """{'/package.Service/Method': its endpoint} for every unary method of `services`
    (streaming ones have no Connect unary form and are left to gRPC)."""
    found: dict[str, Endpoint[Any, Any]] = {}
    for service in services:
        for method in service.methods:
            if method.client_streaming or method.server_streaming:
                continue
            path = f"/{service.full_name}/{method.name}"
            info = MethodInfo(
                name=method.name,
                service_name=service.full_name,
                input=message_factory.GetMessageClass(method.input_type),
                output=message_factory.GetMessageClass(method.output_type),
                idempotency_level=idempotency_of(method),
                stream_type=StreamType.UNARY,
            )
            found[path] = Endpoint.unary(info, forwarder(channel, path, info.output))
    return found


class ConnectGateway(ConnectASGIApplication[None]):
    """The Connect protocol for every endpoint, on one ASGI application. The gRPC and
    gRPC-Web protocols connectrpc also speaks are refused: gRPC clients call the gRPC
    port, which needs no translation."""

    def __init__(
        self, routes: Mapping[str, Any], rest: RestGateway, *, max_message_bytes: int
    ) -> None:
        self._connect_paths = frozenset(routes)
        self._rest = rest
        super().__init__(
            service=None,
            endpoints=lambda _service: routes,
            codecs=[PassThroughProtoCodec(), JsonCodec()],
            read_max_bytes=max_message_bytes,
        )

    @property
    def path(self) -> str:
        return "/"

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and _content_type(scope).startswith(b"application/grpc"):
            await _refuse_grpc(send)
            return
        if scope["type"] == "http" and scope["path"] not in self._connect_paths:
            await self._rest(scope, receive, send)  # a REST path, or none at all
            return
        await super().__call__(scope, receive, send)


def _content_type(scope: Scope) -> bytes:
    for key, value in scope.get("headers", ()):
        if key == b"content-type":
            return bytes(value).lower()
    return b""


_GRPC_REFUSAL = (
    b'{"code":"unimplemented","message":"this port speaks the Connect protocol; '
    b'gRPC and gRPC-Web clients call the gRPC port"}'
)


async def _refuse_grpc(send: Send) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 415,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": _GRPC_REFUSAL})


def gateway_app(
    channel: grpc.aio.Channel, services: Iterable[ServiceDescriptor], *, max_message_bytes: int
) -> ConnectGateway:
    """The gateway for `services`, forwarding over `channel`: the Connect protocol at
    /<package>.<Service>/<Method>, REST at the paths of the google.api.http rules."""
    services = list(services)
    rest = RestGateway(channel, services, max_message_bytes=max_message_bytes)
    return ConnectGateway(endpoints(channel, services), rest, max_message_bytes=max_message_bytes)
