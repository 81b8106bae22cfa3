"""Optional caller authentication with per-caller bearer tokens and scopes.

The callers file (COMMERCE_CALLER_TOKENS_FILE) names each caller with the SHA-256 of
its token and, optionally, what it may call, one caller per line:
`billing 3f2a... customers:read,orders:write` (`commerce callers new NAME --scope ...`
makes the token and the line). A line without scopes grants everything (`*`), as
every line did before scopes existed. The server keeps hashes only, so the file is no
key store.

When the file is set, every call must carry `authorization: Bearer <token>`;
otherwise it ends UNAUTHENTICATED before anything else happens, and carries no data:
an unknown method too, so that an outsider learns nothing of what exists. A known
caller calling outside its scopes gets PERMISSION_DENIED. Health checks stay open for
probes; reflection is open to every known caller.

Scopes: `*` (everything), `<module>:read`, `<module>:write` (reads included), with
`*` for every module (`*:read`). A method's module is its proto package's
(`commerce.orders.v1.CustomerOrderService/...` is `orders`); whether it reads or
writes follows from its name's verb (`method_access`), never from a list kept by hand.

Tokens are long random strings, so one SHA-256 is enough (no salt or slow hash: a
token is not a password), and looking the hash up in a dict leaks nothing useful."""

from __future__ import annotations

import contextvars
import hashlib
import logging
import re
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal, TypeAlias, cast

import grpc

from services.core.domain.errors import DomainError, PermissionDenied, Unauthenticated
from services.core.rpc.statuses import domain_of, status_for

logger = logging.getLogger(__name__)

Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
Behavior: TypeAlias = "Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]"
Access: TypeAlias = Literal["read", "write"]

OPEN_PREFIXES = ("/grpc.health.v1.Health/",)
# Open to every known caller, whatever its scopes: a description of the API, no data.
ANY_CALLER_PREFIXES = ("/grpc.reflection.",)
TOKEN_PREFIX = "cmt_"  # noqa: S105 (a marker that makes leaked tokens greppable)
FULL_ACCESS = "*"
_LINE = re.compile(
    r"^(?P<name>[A-Za-z0-9_.-]{1,64})\s+(?P<digest>[0-9a-f]{64})(?:\s+(?P<scopes>\S+))?$"
)
_SCOPE = re.compile(r"^(?:\*|(?:\*|[a-z][a-z0-9_]*):(?:read|write))$")

# A method's access by the first word of its name. A name starting with any other
# verb is unclassified: only full-access callers may call it, and a test fails on it.
# An Export hands out what the store holds (ExportCustomerData: a customer's data).
READ_VERBS = frozenset({"Get", "List", "BatchGet", "Search", "Stream", "Export"})
WRITE_VERBS = frozenset(
    {"Create", "Update", "Delete", "Set", "Change", "Add", "Redeem", "Authenticate"}
    # The order transitions.
    | {"Pay", "Ship", "Deliver", "Cancel"}
    # RemoveCustomerTags, EraseCustomer.
    | {"Remove", "Erase"}
)
_VERB = re.compile(r"^(?:Batch)?[A-Z][a-z]*")

# The HTTP gateway (services.core.http) reaches the gRPC server over a private unix
# socket, so the server sees that socket as every HTTP call's peer; the gateway names
# the HTTP client's address in this metadata key. The server believes it only from a
# unix socket peer (the socket's directory is the server user's alone), and the
# gateway drops the key from what HTTP callers send: nobody can pose as an address.
CLIENT_ADDRESS_KEY = "commerce-client-address"

# The name of the caller whose token the current call carries (set for unary calls).
_current_caller: contextvars.ContextVar[str] = contextvars.ContextVar("caller", default="")


@cache
def method_access(method: str) -> Access | None:
    """'/commerce.customers.v1.CustomerService/GetCustomer' -> 'read'; None when its
    verb is neither a known read nor a known write."""
    verb_match = _VERB.match(method.rpartition("/")[2])
    verb = verb_match[0] if verb_match else ""
    if verb in READ_VERBS:
        return "read"
    if verb in WRITE_VERBS or verb.removeprefix("Batch") in WRITE_VERBS:
        return "write"
    return None


def module_of(method: str) -> str:
    """'/commerce.orders.v1.OrderService/GetOrder' -> 'orders'."""
    package = domain_of(method)
    parts = package.split(".")
    return parts[1] if len(parts) > 2 else package


def parse_scopes(text: str) -> frozenset[str]:
    """'customers:read,orders:write' -> its scopes; ValueError naming a bad one."""
    scopes = frozenset(scope for scope in text.split(",") if scope)
    for scope in sorted(scopes):
        if not _SCOPE.match(scope):
            raise ValueError(
                f"bad scope {scope!r}: expected '*', '<module>:read' or '<module>:write' "
                "(module e.g. customers, orders, loyalty, or '*')"
            )
    if not scopes:
        raise ValueError("no scope given")
    return scopes


@dataclass(frozen=True)
class Caller:
    name: str
    scopes: frozenset[str] = frozenset({FULL_ACCESS})

    def may_call(self, method: str) -> bool:
        if FULL_ACCESS in self.scopes or method.startswith(ANY_CALLER_PREFIXES):
            return True
        access = method_access(method)
        if access is None:
            return False
        module = module_of(method)
        granting = {f"{module}:write", "*:write"}
        if access == "read":
            granting |= {f"{module}:read", "*:read"}
        return not self.scopes.isdisjoint(granting)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """A fresh caller token: 256 random bits."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def load_callers(path: str) -> dict[str, Caller]:
    """{token digest: caller} from a callers file; ValueError naming the first bad line."""
    callers: dict[str, Caller] = {}
    for number, raw in enumerate(Path(path).read_text().splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = _LINE.match(line)
        if match is None:
            raise ValueError(
                f"{path}, line {number}: expected '<caller name> <sha256 hex of its token> "
                "[scope,scope...]'"
            )
        try:
            scopes = parse_scopes(match["scopes"]) if match["scopes"] else frozenset({FULL_ACCESS})
        except ValueError as error:
            raise ValueError(f"{path}, line {number}: {error}") from None
        callers[match["digest"]] = Caller(match["name"], scopes)
    if not callers:
        raise ValueError(f"{path} names no caller: every call would be refused")
    return callers


def caller_identity(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    """Who makes the current call: 'token:<name>' for a call with a caller token, else
    'address:<IP address of the peer>' (without its port, which changes with every
    connection), the HTTP client's for a call through the HTTP gateway."""
    if name := _current_caller.get():
        return "token:" + name
    peer = context.peer() or ""
    kind, _, address = peer.partition(":")
    if kind in ("ipv4", "ipv6"):
        address = address.rpartition(":")[0] or address
    elif kind == "unix" and (forwarded := _forwarded_client(context)):
        address = forwarded
    return "address:" + address


def _forwarded_client(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == CLIENT_ADDRESS_KEY and isinstance(value, str):
            return value
    return ""


class CallerAuthInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, callers: Mapping[str, Caller]) -> None:
        self._callers = dict(callers)
        self._named: dict[tuple[str, str], Handler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if method.startswith(OPEN_PREFIXES):
            return handler
        caller = self._caller(handler_call_details.invocation_metadata)
        if caller is None:
            # Before the method's existence shows: an unknown one is refused alike.
            logger.warning("refused a call of %s: no valid caller token", method)
            return _refusal(handler, _UNAUTHENTICATED)
        if handler is None:
            return None
        if not caller.may_call(method):
            logger.warning("refused %s a call of %s: outside its scopes", caller.name, method)
            return _refusal(handler, _permission_denied(method))
        return self._named_handler(method, caller.name, handler)

    def _caller(self, metadata: Any) -> Caller | None:
        for key, value in metadata or ():
            if key == "authorization" and isinstance(value, str):
                scheme, _, token = value.partition(" ")
                if scheme.lower() == "bearer" and token:
                    return self._callers.get(token_digest(token.strip()))
        return None

    def _named_handler(self, method: str, name: str, handler: Handler) -> Handler:
        """`handler`, its unary calls knowing the caller's name (caller_identity)."""
        if handler.unary_unary is None:
            return handler
        named = self._named.get((method, name))
        if named is None:
            behavior = cast(Behavior, handler.unary_unary)

            async def as_caller(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                _current_caller.set(name)
                return await behavior(request, context)

            named = grpc.unary_unary_rpc_method_handler(
                as_caller,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
            self._named[(method, name)] = named
        return named


_UNAUTHENTICATED = Unauthenticated(
    "this server needs a caller token: metadata 'authorization: Bearer <token>'",
    reason="CALLER_UNAUTHENTICATED",
)


def _permission_denied(method: str) -> PermissionDenied:
    access = method_access(method)
    needed = f"{module_of(method)}:{access}" if access else FULL_ACCESS
    return PermissionDenied(
        f"this caller's scopes do not include {needed}",
        reason="CALLER_PERMISSION_DENIED",
        metadata={"method": method.rpartition("/")[2], "needed_scope": needed},
    )


def _ignore_body(_body: bytes) -> None:
    return None


def _refusal(handler: Handler | None, error: DomainError) -> Handler:
    """A handler of the same kind as `handler` (unary for an unknown method) that
    ends the call with `error`'s status, without reading the request."""
    status = status_for(error, domain="commerce")

    async def refuse(_request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await context.abort(status.code, status.details, status.trailing_metadata)

    if handler is None:
        return grpc.unary_unary_rpc_method_handler(refuse)
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
