"""Optional caller authentication with per-caller bearer tokens.

The callers file (COMMERCE_CALLER_TOKENS_FILE) names each caller with the SHA-256 of
its token, one per line: `billing 3f2a...` (`commerce callers new NAME` makes both).
The server keeps hashes only, so the file is no key store. When the file is set,
every call must carry `authorization: Bearer <token>`; otherwise it ends
UNAUTHENTICATED before any servicer runs, and carries no data. Health checks stay
open for probes.

Tokens are long random strings, so one SHA-256 is enough (no salt or slow hash: a
token is not a password), and looking the hash up in a dict leaks nothing useful."""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypeAlias

import grpc

from services.core.domain.errors import Unauthenticated
from services.core.rpc.statuses import status_for

logger = logging.getLogger(__name__)

Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
OPEN_PREFIXES = ("/grpc.health.v1.Health/",)
TOKEN_PREFIX = "cmt_"  # noqa: S105 (a marker that makes leaked tokens greppable)
_LINE = re.compile(r"^(?P<name>[A-Za-z0-9_.-]{1,64})\s+(?P<digest>[0-9a-f]{64})$")


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """A fresh caller token: 256 random bits."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def load_callers(path: str) -> dict[str, str]:
    """{token digest: caller name} from a callers file; ValueError naming the first
    bad line."""
    callers: dict[str, str] = {}
    for number, raw in enumerate(Path(path).read_text().splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = _LINE.match(line)
        if match is None:
            raise ValueError(
                f"{path}, line {number}: expected '<caller name> <sha256 hex of its token>'"
            )
        callers[match["digest"]] = match["name"]
    if not callers:
        raise ValueError(f"{path} names no caller: every call would be refused")
    return callers


class CallerAuthInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, callers: Mapping[str, str]) -> None:
        self._callers = dict(callers)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(OPEN_PREFIXES):
            return handler
        if self._caller(handler_call_details.invocation_metadata) is not None:
            return handler
        logger.warning("refused a call of %s: no valid caller token", method)
        return _refusal(handler)

    def _caller(self, metadata: Any) -> str | None:
        for key, value in metadata or ():
            if key == "authorization" and isinstance(value, str):
                scheme, _, token = value.partition(" ")
                if scheme.lower() == "bearer" and token:
                    return self._callers.get(token_digest(token.strip()))
        return None


def _ignore_body(_body: bytes) -> None:
    return None


def _refusal(handler: Handler) -> Handler:
    """A handler of the same kind as `handler` that ends the call UNAUTHENTICATED."""
    status = status_for(
        Unauthenticated(
            "this server needs a caller token: metadata 'authorization: Bearer <token>'",
            reason="CALLER_UNAUTHENTICATED",
        ),
        domain="commerce",
    )

    async def refuse(_request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await context.abort(status.code, status.details, status.trailing_metadata)

    # The body of a refused call is never parsed: a caller without a token learns
    # nothing, not even whether its bytes were a valid message.
    serializers: dict[str, Any] = {
        "request_deserializer": _ignore_body,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(refuse, **serializers)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(refuse, **serializers)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(refuse, **serializers)
    return grpc.stream_stream_rpc_method_handler(refuse, **serializers)
