"""The server span of every call, installed only when tracing is on
(services.core.tracing): a SERVER span named after the full method, child of the
span the caller's `traceparent` metadata names (the HTTP gateway passes the header
on as metadata), current while the call runs, so that its SQL spans and log lines
belong to it.

Subscriptions (methods named Stream..., EventService.StreamEvents) get none: a span
is exported only once it ends, and theirs would last as long as the subscriber
stays; bounded server streams (exports) get one for the whole stream."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeAlias, cast

import grpc
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from services.core.tracing import failed

Behavior: TypeAlias = "Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]"
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"

RPC_SYSTEM = "grpc"


class TracingInterceptor(grpc.aio.ServerInterceptor):
    """Wraps each method's behaviour once, around the RPC guard (services.core.rpc.
    interceptor): the span covers the error mapping and the log line."""

    def __init__(self, tracer: trace.Tracer) -> None:
        self._tracer = tracer
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
        if handler is None or not method.startswith("/commerce."):
            return handler  # health probes and reflection: no span
        if handler.unary_unary is not None:
            wrapped = grpc.unary_unary_rpc_method_handler(
                self._traced(cast(Behavior, handler.unary_unary), method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        elif handler.unary_stream is not None and not _is_subscription(method):
            wrapped = grpc.unary_stream_rpc_method_handler(
                self._traced(cast(Behavior, handler.unary_stream), method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        else:
            return handler
        self._wrapped[method] = wrapped
        return wrapped

    def _traced(self, behavior: Behavior, method: str) -> Behavior:
        name = method.lstrip("/")
        service, _, rpc_method = name.partition("/")
        attributes = {"rpc.system": RPC_SYSTEM, "rpc.service": service, "rpc.method": rpc_method}

        async def traced(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            with self._server_span(name, attributes, context) as span:
                try:
                    result = await behavior(request, context)
                except grpc.aio.AbortError:
                    _ended(span, context.code())  # the status the call was aborted with
                    raise
                except asyncio.CancelledError:
                    _ended(span, grpc.StatusCode.CANCELLED)
                    raise
                except Exception as error:
                    failed(span, error)
                    raise
                _ended(span, context.code())
                return result

        return traced

    @contextmanager
    def _server_span(
        self,
        name: str,
        attributes: dict[str, str],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> Iterator[trace.Span]:
        parent = propagate.extract(_text_metadata(context))
        with self._tracer.start_as_current_span(
            name,
            context=parent,
            kind=SpanKind.SERVER,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            yield span


def _is_subscription(method: str) -> bool:
    return method.rpartition("/")[2].startswith("Stream")


def _text_metadata(context: grpc.aio.ServicerContext[Any, Any]) -> dict[str, str]:
    """The call's text metadata, as the propagators read it (traceparent, tracestate,
    baggage)."""
    return {
        key: value for key, value in context.invocation_metadata() or () if isinstance(value, str)
    }


def _ended(span: trace.Span, code: grpc.StatusCode | None) -> None:
    """The call's status on its span: rpc.grpc.status_code always; ERROR, with the
    code's name, for every code but OK."""
    code = code or grpc.StatusCode.OK
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    if code is not grpc.StatusCode.OK:
        span.set_status(Status(StatusCode.ERROR, code.name))
