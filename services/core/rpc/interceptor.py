"""The guard around every RPC of the API: it bounds the work by the caller's
deadline, turns every failure into a status (services.core.rpc.statuses), writes one
log line and updates the Prometheus metrics. One wrapper, built once per method as it
is registered, so that a call pays for no interceptor chain (docs/performance.md)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeAlias, TypeVar, cast

import grpc
from grpc._cython import cygrpc  # type: ignore[attr-defined]  # no public name for it

from services.core import consistency, deadlines
from services.core.domain.errors import DomainError
from services.core.logs import ACCESS_LOGGER
from services.core.rpc import metrics
from services.core.rpc.requests import Refusal, tolerant
from services.core.rpc.statuses import (
    POOL_EXHAUSTED_ERRORS,
    domain_of,
    is_deadline_timeout,
    is_unavailable,
    plain_status,
    retry_status,
    status_for,
)

logger = logging.getLogger(__name__)
rpc_logger = logging.getLogger(ACCESS_LOGGER)

# Generic only in the type stubs, hence the quotes.
Behavior: TypeAlias = "Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]"
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"


def guarded_handler(method: str, handler: Handler, *, finish: bool = False) -> Handler:
    """`handler` with deadlines, error statuses, metrics and the log line around its
    behaviour: every unary method, and the server streams of the API
    (EventService.StreamEvents; reflection and health stream too, and handle their
    own errors). Built once per method, as it is registered (services.server), so a
    call goes through no interceptor for it.

    `finish`: when a caller hangs up or its deadline passes, answer it at once but
    let the servicer run to its end instead of cancelling it midway (the embedded
    SQLite database's export snapshots: a task cancelled inside SQLAlchemy's aiosqlite
    adapter can leave its connection checked out for good). On PostgreSQL, asyncpg
    cancels cleanly and the transaction's statement timeout stops the work
    server-side."""
    decode = handler.request_deserializer
    if handler.unary_stream is not None and method.startswith("/commerce."):
        return grpc.unary_stream_rpc_method_handler(
            _guard_stream(cast(Behavior, handler.unary_stream), method),
            request_deserializer=decode and tolerant(decode, _message_name(decode)),
            response_serializer=handler.response_serializer,
        )
    if handler.unary_unary is None:
        return handler
    return grpc.unary_unary_rpc_method_handler(
        # grpc.aio calls the behaviours it registers with an aio context and awaits them.
        _guard(cast(Behavior, handler.unary_unary), method, finish=finish),
        # Decoding problems become statuses of the guarded behaviour, not UNKNOWN.
        request_deserializer=decode and tolerant(decode, _message_name(decode)),
        response_serializer=handler.response_serializer,
    )


class RpcInterceptor(grpc.aio.ServerInterceptor):
    """guarded_handler as an interceptor, for a server whose handlers are registered
    by others: it wraps each method once, on its first call."""

    def __init__(self, *, finish_abandoned_calls: bool = False) -> None:
        self._wrapped: dict[str, Handler] = {}
        self._finish = finish_abandoned_calls

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
        if handler is None:
            return handler
        wrapped = self._wrapped[method] = guarded_handler(method, handler, finish=self._finish)
        return wrapped


def _asks_strong(context: grpc.aio.ServicerContext[Any, Any]) -> bool:
    """Whether the caller sent `x-commerce-consistency: strong` (services.core.consistency)."""
    return any(
        key == consistency.METADATA_KEY and value == consistency.STRONG
        for key, value in context.invocation_metadata() or ()
    )


def _guard(behavior: Behavior, method: str, *, finish: bool) -> Behavior:
    domain = domain_of(method)
    service, _, name = method.lstrip("/").partition("/")
    started = metrics.STARTED.labels("unary", service, name)
    seconds = metrics.HANDLING_SECONDS.labels("unary", service, name)
    in_flight = metrics.IN_FLIGHT.labels(service)
    handled = {
        code: metrics.HANDLED.labels("unary", service, name, code.name) for code in grpc.StatusCode
    }
    # Probes call health every few seconds: counted in the metrics, kept out of the log.
    logged = not service.startswith("grpc.health.")

    async def guarded(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        begin = time.perf_counter()
        started.inc()
        in_flight.inc()
        code = grpc.StatusCode.OK
        resource = ""  # the resource a failure names, for the log line
        try:
            # The caller stops waiting at its deadline; so does the work, database
            # statements included (asyncpg cancels them; PostgreSQL transactions also
            # carry the deadline as their statement timeout, services.core.db.unit_of_work).
            time_remaining = context.time_remaining()
            deadline = asyncio.timeout(time_remaining)
            try:
                if isinstance(request, Refusal):
                    raise _refused(request, method)
                with (
                    deadlines.bounded_by(time_remaining),
                    consistency.required(_asks_strong(context)),
                ):
                    work = behavior(request, context)
                    async with deadline:
                        return await (finished_anyway(work) if finish else work)
            except DomainError as error:
                status = status_for(error, domain)
                resource = error.resource_name
            except grpc.aio.AbortError:
                raise  # a servicer aborted with its own status
            except Exception as error:
                status = _failure_status(error, method, deadline_passed=deadline.expired())
            code = status.code
            await context.abort(status.code, status.details, status.trailing_metadata)
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        finally:
            elapsed = time.perf_counter() - begin
            in_flight.dec()
            seconds.observe(elapsed)
            handled[code].inc()
            if logged:
                _log(method, request, code, elapsed, resource)

    return guarded


# What a write raises when the caller hung up while the message was being sent: gRPC
# fails the write, before it tells the servicer that the call was cancelled.
_WRITE_REFUSED = (cygrpc.ExecuteBatchError,)


class CallEnded(Exception):
    """The caller hung up while a message of its stream was being sent."""


async def write_stream(sent: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
    """Runs a server-streaming behaviour's result: an async generator's messages are
    written one at a time (each write waits until gRPC took the last); a coroutine
    writes its own. The generator is closed as the call ends, however it ends, so
    its cleanup (a snapshot's transaction, say) runs then, in the call's task, not
    whenever the garbage collector finds it."""
    if hasattr(sent, "__aiter__"):
        # Closed as the call ends, however it ends: what the generator holds (an
        # export's snapshot and its connections) is released then, not whenever the
        # garbage collector gets to it.
        async with contextlib.aclosing(sent):
            async for message in sent:
                try:
                    await context.write(message)
                except _WRITE_REFUSED as error:
                    raise CallEnded from error
    else:
        await sent


def _guard_stream(behavior: Behavior, method: str) -> Behavior:
    """What `_guard` does for a server-streaming behaviour that writes its messages
    with `context.write`: the deadline bounds the whole stream, a failure at any
    point ends it with its status."""
    domain = domain_of(method)
    service, _, name = method.lstrip("/").partition("/")
    started = metrics.STARTED.labels("server_stream", service, name)
    seconds = metrics.HANDLING_SECONDS.labels("server_stream", service, name)
    in_flight = metrics.IN_FLIGHT.labels(service)
    handled = {
        code: metrics.HANDLED.labels("server_stream", service, name, code.name)
        for code in grpc.StatusCode
    }

    async def guarded(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        begin = time.perf_counter()
        started.inc()
        in_flight.inc()
        code = grpc.StatusCode.OK
        resource = ""
        try:
            time_remaining = context.time_remaining()
            deadline = asyncio.timeout(time_remaining)
            try:
                if isinstance(request, Refusal):
                    raise _refused(request, method)
                with deadlines.bounded_by(time_remaining):
                    async with deadline:
                        await write_stream(behavior(request, context), context)
                return
            except DomainError as error:
                status = status_for(error, domain)
                resource = error.resource_name
            except grpc.aio.AbortError:
                code = context.code() or grpc.StatusCode.UNKNOWN
                raise  # a servicer (or the drain) ended it with its own status
            except CallEnded:
                code = grpc.StatusCode.CANCELLED  # nobody is left to answer
                return
            except Exception as error:
                status = _failure_status(error, method, deadline_passed=deadline.expired())
            code = status.code
            await context.abort(status.code, status.details, status.trailing_metadata)
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        finally:
            elapsed = time.perf_counter() - begin
            in_flight.dec()
            seconds.observe(elapsed)
            handled[code].inc()
            _log(method, request, code, elapsed, resource)

    return guarded


def _refused(refusal: Refusal, method: str) -> DomainError:
    if refusal.malformed:
        logger.warning("refused an undecodable request body for %s", method)
    return refusal.error


def _message_name(decode: Any) -> str:
    """'commerce.customers.v1.GetCustomerRequest' from its FromString."""
    descriptor = getattr(getattr(decode, "__self__", None), "DESCRIPTOR", None)
    return str(getattr(descriptor, "full_name", "request"))


# What RetryInfo tells callers to wait before trying again: a lost database takes
# seconds to come back (health probes it every 2 s); a busy pool frees up sooner.
UNAVAILABLE_RETRY_AFTER = timedelta(seconds=1)
BUSY_RETRY_AFTER = timedelta(milliseconds=200)

T = TypeVar("T")

# Abandoned calls still running (a reference keeps each task alive until it ends).
_abandoned: set[asyncio.Task[Any]] = set()


async def finished_anyway(work: Awaitable[T]) -> T:
    """Awaits `work` in a task of its own that cancelling this await leaves running:
    a statement cancelled midway can leave SQLite's one pooled connection checked out
    for good."""
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except BaseException:
        if not task.done():
            _abandoned.add(task)
            task.add_done_callback(_forget_abandoned)
        raise


def _forget_abandoned(task: asyncio.Task[Any]) -> None:
    _abandoned.discard(task)
    if not task.cancelled() and task.exception() is not None:
        logger.info("an abandoned call ended with %s", type(task.exception()).__name__)


def _failure_status(error: Exception, method: str, *, deadline_passed: bool) -> grpc.Status:
    """The status of a failure that is not a domain error."""
    if isinstance(error, NotImplementedError):
        # What a generated servicer base raises for a method the module does not
        # serve (yet): the caller learns that, not of an internal error.
        return plain_status(grpc.StatusCode.UNIMPLEMENTED, "method not implemented")
    unavailable = is_unavailable(error)
    pool_exhausted = isinstance(error, POOL_EXHAUSTED_ERRORS)
    if is_deadline_timeout(error) or (deadline_passed and (unavailable or pool_exhausted)):
        return plain_status(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded")
    if pool_exhausted:
        logger.warning("no free database connection for %s", method)
        return retry_status(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "server busy: no database connection free",
            reason="SERVER_BUSY",
            retry_after=BUSY_RETRY_AFTER,
        )
    if unavailable:
        logger.warning("database unavailable in %s: %s", method, type(error).__name__)
        return retry_status(
            grpc.StatusCode.UNAVAILABLE,
            "service temporarily unavailable",
            reason="DATABASE_UNAVAILABLE",
            retry_after=UNAVAILABLE_RETRY_AFTER,
        )
    logger.exception("unexpected error in %s", method)
    return plain_status(grpc.StatusCode.INTERNAL, "internal error")


def _log(method: str, request: Any, code: grpc.StatusCode, elapsed: float, resource: str) -> None:
    """The RPC's line; a failure that names a resource (NOT_FOUND) names it too."""
    if not rpc_logger.isEnabledFor(logging.INFO):
        return
    store_id = getattr(request, "store_id", None)
    duration_ms = round(elapsed * 1000, 2)
    fields = {
        "grpc_method": method,
        "store_id": store_id,
        "grpc_code": code.name,
        "duration_ms": duration_ms,
    }
    line = "%s store_id=%s code=%s duration_ms=%s"
    arguments: list[Any] = [method, store_id, code.name, duration_ms]
    if resource:
        fields["resource_name"] = resource
        line += " resource_name=%s"
        arguments.append(resource)
    rpc_logger.info(line, *arguments, extra=fields)
