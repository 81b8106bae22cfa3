"""The REST side of the gateway: the paths the methods' google.api.http rules
declare (`GET /v1/stores/1/customers/42`), transcoded to gRPC calls forwarded over
the same private channel, with the same metadata and deadline, as Connect calls; the
answer is the response message as canonical proto3 JSON, or a google.rpc.Status
JSON body (`{"code": 5, "message": ..., "details": [{"@type": ...}]}`)."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeAlias

import grpc
from google.protobuf import json_format
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

from services.core.domain.errors import DomainError, InvalidArgument
from services.core.http.codecs import JsonCodec
from services.core.http.errors import rpc_status, status_http, status_json
from services.core.http.metadata import copy_metadata, metadata_from
from services.core.http.routes import Match, Route, route_table
from services.core.http.transcoding import build_request
from services.core.rpc.statuses import status_for, status_message

logger = logging.getLogger(__name__)

Receive: TypeAlias = "Callable[[], Awaitable[dict[str, Any]]]"
Send: TypeAlias = "Callable[[dict[str, Any]], Awaitable[None]]"
Answer: TypeAlias = "tuple[int, list[tuple[str, str]], bytes]"

TIMEOUT_HEADER = "connect-timeout-ms"
_JSON = ("content-type", "application/json")
# The domain of the errors that belong to no method: the path matched none.
_GATEWAY_DOMAIN = "commerce"
_MAX_PATH_QUOTED = 200
_CODEC = JsonCodec()


class _TooLarge(Exception):
    """The request body exceeds the message size limit."""


class RestGateway:
    """An ASGI application serving the REST routes of `services`."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        services: Iterable[ServiceDescriptor],
        *,
        max_message_bytes: int,
    ) -> None:
        self.table = route_table(services)
        for problem in self.table.unsupported:
            logger.warning("the HTTP gateway serves no REST route for %s", problem)
        self._max_message_bytes = max_message_bytes
        self._calls = {
            route.grpc_path: channel.unary_unary(
                route.grpc_path,
                request_serializer=_serialize,
                response_deserializer=route.response_class.FromString,
            )
            for route in self.table.routes
            if not route.method.server_streaming
        }
        self._streams = {
            route.grpc_path: channel.unary_stream(
                route.grpc_path,
                request_serializer=_serialize,
                response_deserializer=route.response_class.FromString,
            )
            for route in self.table.routes
            if route.method.server_streaming
        }

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        try:
            status, headers, body = await self._answer(scope, receive, send)
            if status == 0:
                return  # streamed
        except Exception:  # a bug of the gateway's: logged, never a bare 500 page
            logger.exception("the HTTP gateway failed to answer %s", scope.get("path"))
            status, headers, body = _failure(
                status_message(grpc.StatusCode.INTERNAL, "internal error", [])
            )
        await _respond(send, status, headers, body)

    async def _answer(self, scope: dict[str, Any], receive: Receive, send: Send) -> Answer:
        raw_path = bytes(scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
        http_method = scope["method"]
        match = self.table.match(http_method, raw_path)
        if match is None or match.route is None:
            return _unrouted(http_method, raw_path, match)
        route = match.route
        headers = [
            (bytes(key).decode("latin-1").lower(), bytes(value).decode("latin-1"))
            for key, value in scope.get("headers", ())
        ]
        try:
            timeout = _timeout(headers)
            body = await _read_body(receive, self._max_message_bytes) if route.body else b""
            request = build_request(route, match.bindings, scope.get("query_string", b""), body)
        except DomainError as error:
            status = status_for(error, domain=route.method.containing_service.file.package)
            return _failure(rpc_status(status.code, status.details, status.trailing_metadata))
        except _TooLarge:
            return _failure(_too_large(route, self._max_message_bytes))
        client = scope.get("client")
        metadata = metadata_from(headers, client[0] if client else None)
        if route.method.server_streaming:
            return await self._stream(route, request, metadata, timeout, send)
        return await self._forward(route, request, metadata, timeout)

    async def _stream(
        self,
        route: Route,
        request: Message,
        metadata: list[tuple[str, str | bytes]],
        deadline_seconds: float | None,
        send: Send,
    ) -> Answer:
        """A server stream as newline-delimited JSON: one response message a line, sent
        as it comes (each send waits for the HTTP client, so the gRPC stream's flow
        control reaches it). A failure before the first message is an ordinary error
        answer; one after it, a last line {"error": <google.rpc.Status JSON>}.
        Returns status 0 once it answered itself."""
        call = self._streams[route.grpc_path](request, metadata=metadata, timeout=deadline_seconds)
        started = False
        try:
            async for response in call:
                if not started:
                    started = True
                    await send(
                        {
                            "type": "http.response.start",
                            "status": 200,
                            "headers": [(b"content-type", b"application/x-ndjson")],
                        }
                    )
                line = _encode(response, route.response_body) + b"\n"
                await send({"type": "http.response.body", "body": line, "more_body": True})
            failure: status_pb2.Status | None = None
        except grpc.aio.AioRpcError as error:
            failure = rpc_status(error.code(), error.details() or "", error.trailing_metadata())
        finally:
            call.cancel()  # the HTTP client went away, or the stream ended: nothing left
        if not started:
            if failure is not None:
                return _failure(failure)
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"application/x-ndjson")],
                }
            )
        last = b""
        if failure is not None:
            last = b'{"error":' + status_json(failure) + b"}\n"
        await send({"type": "http.response.body", "body": last})
        return 0, [], b""

    async def _forward(
        self,
        route: Route,
        request: Message,
        metadata: list[tuple[str, str | bytes]],
        deadline_seconds: float | None,
    ) -> Answer:
        call = self._calls[route.grpc_path](request, metadata=metadata, timeout=deadline_seconds)
        try:
            response: Message = await call
        except grpc.aio.AioRpcError as failure:
            status = rpc_status(
                failure.code(), failure.details() or "", failure.trailing_metadata()
            )
            return _failure(status)
        headers = [_JSON]
        copy_metadata(await call.initial_metadata(), lambda k, v: headers.append((k, v)))
        # As the Connect path sends them: trailers become `trailer-` headers.
        trailers = await call.trailing_metadata()
        copy_metadata(trailers, lambda k, v: headers.append((f"trailer-{k}", v)))
        return 200, headers, _encode(response, route.response_body)


def _serialize(request: Message) -> bytes:
    return request.SerializeToString()


def _encode(response: Message, response_body: str) -> bytes:
    if not response_body:
        return _CODEC.encode(response)
    found = response.DESCRIPTOR.fields_by_name[response_body]
    if found.message_type is not None and not found.is_repeated:
        return _CODEC.encode(getattr(response, response_body))
    whole = json_format.MessageToDict(response, always_print_fields_with_no_presence=True)
    value = whole.get(found.json_name)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def _timeout(headers: list[tuple[str, str]]) -> float | None:
    """The call's deadline in seconds, from Connect-Timeout-Ms as the Connect path
    reads it (at most 10 digits of milliseconds)."""
    value = next((v for k, v in headers if k == TIMEOUT_HEADER), "")
    if not value:
        return None
    if len(value) > 10 or not (value.isascii() and value.isdigit()):
        raise InvalidArgument(
            [], f"the Connect-Timeout-Ms header must be 1 to 10 digits, not {value[:20]!r}"
        )
    return int(value) / 1000


async def _read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _unrouted(http_method: str, raw_path: str, match: Match | None) -> Answer:
    quoted = f"{http_method} {raw_path}"[:_MAX_PATH_QUOTED]
    if match is None:
        return _failure(
            status_message(
                grpc.StatusCode.NOT_FOUND,
                f"no method is served at {quoted}",
                [error_details_pb2.ErrorInfo(reason="ROUTE_NOT_FOUND", domain=_GATEWAY_DOMAIN)],
            )
        )
    allowed = ", ".join(match.allowed)
    status = status_message(
        grpc.StatusCode.UNIMPLEMENTED,
        f"{raw_path[:_MAX_PATH_QUOTED]} takes {allowed}, not {http_method}",
        [
            error_details_pb2.ErrorInfo(
                reason="METHOD_NOT_ALLOWED", domain=_GATEWAY_DOMAIN, metadata={"allow": allowed}
            )
        ],
    )
    _, headers, body = _failure(status)
    return 405, [*headers, ("allow", allowed)], body


def _too_large(route: Route, limit: int) -> status_pb2.Status:
    return status_message(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        f"the request body exceeds the limit of {limit} bytes",
        [
            error_details_pb2.ErrorInfo(
                reason="REQUEST_TOO_LARGE", domain=route.method.containing_service.file.package
            )
        ],
    )


def _failure(status: status_pb2.Status) -> Answer:
    http_status, headers = status_http(status)
    return http_status, [_JSON, *headers], status_json(status)


async def _respond(send: Send, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
    encoded = [(key.encode("latin-1"), value.encode("latin-1")) for key, value in headers]
    encoded.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": encoded})
    await send({"type": "http.response.body", "body": body})
