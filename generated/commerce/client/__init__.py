"""The default way to connect to the commerce services, over one server or many.

Written by hand (scripts/generate-protos keeps it): every other module of this
package is generated from the protos.

    from commerce.client import connect
    from commerce.customers.v1 import customer_service_pb2_grpc

    channel = connect(["10.0.0.1:50051", "10.0.0.2:50051", "10.0.0.3:50051"])
    customers = customer_service_pb2_grpc.CustomerServiceStub(channel)

`connect` gives a `grpc.aio.Channel` (`connect_sync` a `grpc.Channel`) that

- spreads calls over every address with the `round_robin` load balancer, and keeps
  sending them to the others while one is down;
- retries a call that failed with UNAVAILABLE (a server gone, refusing calls while it
  shuts down, or without its database) when sending it again is safe: the reads, and
  the writes the server deduplicates by `request_id`. Other writes are never sent
  twice by the channel: their failure reaches the caller, who knows what to do;
- gives every call a default deadline (a shorter one of the caller's own wins);
- fills in a fresh `request_id` for a deduplicated write sent without one, so that the
  channel's retries of it can never apply it twice (`request_ids=False` turns that
  off, and with it the retries of those writes).

Everything the channel does is in its service config (`service_config()`), which the
tables below make: clients in other languages can use the same JSON."""

from __future__ import annotations

import ipaddress
import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

import grpc
import grpc.aio

__all__ = [
    "DEDUPLICATED_WRITES",
    "OTHER_WRITES",
    "READS",
    "STREAMED_READS",
    "connect",
    "connect_sync",
    "service_config",
    "target",
]

_CUSTOMERS = "commerce.customers.v1.CustomerService"
_ORDERS = "commerce.orders.v1.OrderService"
_CUSTOMER_ORDERS = "commerce.orders.v1.CustomerOrderService"
_LOYALTY = "commerce.loyalty.v1.CustomerLoyaltyService"
_EVENTS = "commerce.events.v1.EventService"
_HEALTH = "grpc.health.v1.Health"

# Every RPC the server answers has its place in exactly one of the four tables
# (tests/unit/test_client_service_config.py holds them to the protos).

# Calls that change nothing: sending one again is always safe.
READS: Final[tuple[tuple[str, str], ...]] = (
    (_CUSTOMERS, "GetCustomer"),
    (_CUSTOMERS, "BatchGetCustomers"),
    (_CUSTOMERS, "ListCustomers"),
    (_CUSTOMERS, "ListCustomerAddresses"),
    (_CUSTOMERS, "GetCustomerMetrics"),
    (_ORDERS, "GetOrder"),
    (_ORDERS, "ListOrders"),
    (_CUSTOMER_ORDERS, "ListCustomerOrders"),
    (_CUSTOMER_ORDERS, "GetRecentCustomerOrders"),
    (_CUSTOMER_ORDERS, "GetCustomerOrderCount"),
    (_CUSTOMER_ORDERS, "GetCustomerOrderStats"),
    (_LOYALTY, "GetCustomerLoyalty"),
    (_EVENTS, "ListEvents"),
    (_HEALTH, "Check"),
    (_HEALTH, "List"),
)

# Reads that stream: retried like the others (gRPC retries a call only until the
# server has begun to answer, so a stream broken midway is never replayed), without
# a default deadline, since an export of a large store or a feed followed for hours
# has no natural end. Resuming a broken stream (after the last customer_id or
# cursor received) is the caller's part.
STREAMED_READS: Final[tuple[tuple[str, str], ...]] = (
    (_CUSTOMERS, "ExportCustomers"),
    (_CUSTOMERS, "ExportCustomerData"),
    (_EVENTS, "StreamEvents"),
    (_HEALTH, "Watch"),
)

# Writes whose request carries a `request_id` (AIP-155): the server remembers it, and
# a second request with it answers what the first did instead of acting twice.
DEDUPLICATED_WRITES: Final[tuple[tuple[str, str], ...]] = (
    (_CUSTOMERS, "CreateCustomer"),
    (_CUSTOMERS, "CreateCustomerAddress"),
    (_ORDERS, "CreateOrder"),
    (_ORDERS, "PayOrder"),
    (_ORDERS, "ShipOrder"),
    (_ORDERS, "DeliverOrder"),
    (_ORDERS, "CancelOrder"),
    (_LOYALTY, "AddLoyaltyPoints"),
    (_LOYALTY, "RedeemLoyaltyPoints"),
)

# Writes the server cannot recognise a second time: never retried by the channel.
# Some look harmless to repeat (a status set, tags added), but a repeat can undo
# another caller's change made in between, or fail with ABORTED once the first
# changed the etag; AuthenticateCustomer counts failed logins.
OTHER_WRITES: Final[tuple[tuple[str, str], ...]] = (
    (_CUSTOMERS, "UpdateCustomer"),
    (_CUSTOMERS, "SetCustomerStatus"),
    (_CUSTOMERS, "AuthenticateCustomer"),
    (_CUSTOMERS, "ChangeCustomerPassword"),
    (_CUSTOMERS, "UpdateCustomerAddress"),
    (_CUSTOMERS, "DeleteCustomerAddress"),
    (_CUSTOMERS, "AddCustomerTags"),
    (_CUSTOMERS, "RemoveCustomerTags"),
    (_CUSTOMERS, "EraseCustomer"),
    (_ORDERS, "UpdateOrderStatus"),
)

# UNAVAILABLE only: it is what a call gets from a server that died or shuts down, or
# that lost its database, before anything was committed or when a retry is harmless.
# RESOURCE_EXHAUSTED is the server shedding load (or a message too large): sending
# the call again at once would add load where it is refused. DEADLINE_EXCEEDED ends
# the call's time, ABORTED (a stale etag) and INTERNAL would fail the same way again.
RETRYABLE_CODES: Final = ("UNAVAILABLE",)

# Five attempts (gRPC's ceiling) spaced 0-0.1 s, 0-0.2 s, 0-0.4 s, 0-0.8 s apart
# (gRPC draws each pause at random up to the backoff): a dead replica is seen within
# the first or second; the rest covers a brief outage of every replica.
RETRY_POLICY: Final[Mapping[str, Any]] = {
    "maxAttempts": 5,
    "initialBackoff": "0.1s",
    "maxBackoff": "1s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": list(RETRYABLE_CODES),
}

# Retries stop while more than half of 100 tokens are spent (a failure spends one, a
# success gives 0.1 back): a fleet that is down is not hammered with five times its
# calls, while the burst of failures of one replica killed mid-load is retried.
RETRY_THROTTLING: Final[Mapping[str, Any]] = {"maxTokens": 100, "tokenRatio": 0.1}

READ_TIMEOUT_SECONDS: Final = 10.0
WRITE_TIMEOUT_SECONDS: Final = 30.0


def _names(methods: Sequence[tuple[str, str]]) -> list[dict[str, str]]:
    return [{"service": service, "method": method} for service, method in methods]


def _seconds(value: float) -> str:
    return f"{value:g}s"


def service_config(
    *,
    read_timeout: float = READ_TIMEOUT_SECONDS,
    write_timeout: float = WRITE_TIMEOUT_SECONDS,
    retry_writes: bool = True,
) -> dict[str, Any]:
    """The channel's service config (gRPC's JSON, as a dict): round_robin, retries and
    default deadlines. `retry_writes=False` leaves the deduplicated writes unretried:
    for a client that may send them without a request_id."""
    retried = {"retryPolicy": dict(RETRY_POLICY)}
    writes: dict[str, Any] = {
        "name": _names(DEDUPLICATED_WRITES),
        "timeout": _seconds(write_timeout),
    }
    if retry_writes:
        writes |= retried
    return {
        "loadBalancingConfig": [{"round_robin": {}}],
        "methodConfig": [
            {"name": _names(READS), "timeout": _seconds(read_timeout)} | retried,
            {"name": _names(STREAMED_READS)} | retried,
            writes,
            {"name": _names(OTHER_WRITES), "timeout": _seconds(write_timeout)},
        ],
        "retryThrottling": dict(RETRY_THROTTLING),
    }


def target(addresses: str | Sequence[str]) -> str:
    """The gRPC target naming every address.

    A string is one name: 'host:port' becomes 'dns:///host:port' (every address the
    name resolves to is used, and resolved again when a connection drops); a target
    with a scheme ('dns:', 'ipv4:', 'ipv6:', 'unix:') is kept as it is. A list of
    'ip:port' becomes 'ipv4:a:p,b:p' (or 'ipv6:[a]:p,[b]:p'): gRPC resolves no list
    of names, so a list holds IP addresses (a list of one may hold a name)."""
    if isinstance(addresses, str):
        return addresses if _has_scheme(addresses) else f"dns:///{addresses}"
    if not addresses:
        raise ValueError("no address to connect to")
    if len(addresses) == 1:
        return target(addresses[0])
    parsed = [_ip_address(address) for address in addresses]
    versions = {ip.version for ip, _ in parsed}
    if versions == {4}:
        return "ipv4:" + ",".join(f"{ip}:{port}" for ip, port in parsed)
    if versions == {6}:
        return "ipv6:" + ",".join(f"[{ip}]:{port}" for ip, port in parsed)
    raise ValueError("a list of addresses is all IPv4 or all IPv6 (or give one DNS name)")


def _has_scheme(name: str) -> bool:
    return name.partition(":")[0] in {"dns", "ipv4", "ipv6", "unix", "unix-abstract", "xds"}


def _ip_address(address: str) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]:
    host, separator, port = address.rpartition(":")
    try:
        if not separator or not port.isdigit():
            raise ValueError(address)
        return ipaddress.ip_address(host.removeprefix("[").removesuffix("]")), int(port)
    except ValueError:
        raise ValueError(
            f"{address!r}: a list of addresses holds 'ip:port' entries (several servers "
            "behind one name: give the name alone, as one string)"
        ) from None


def _channel_options(
    config: Mapping[str, Any], options: Sequence[tuple[str, Any]]
) -> list[tuple[str, Any]]:
    return [
        ("grpc.service_config", json.dumps(config)),
        # The config above is the one in force: none is taken from DNS TXT records.
        ("grpc.service_config_disable_resolution", 1),
        ("grpc.enable_retries", 1),
        # Pings on idle connections find a replica whose host vanished without closing
        # them (the server accepts one every 10 s at most).
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        *options,
    ]


def _credentials(
    credentials: grpc.ChannelCredentials | None, token: str | None
) -> grpc.ChannelCredentials | None:
    """TLS, with the bearer token on every call when one is given."""
    if token is None:
        return credentials
    if credentials is None:
        raise ValueError("a bearer token is sent over TLS only: give credentials too")
    return grpc.composite_channel_credentials(
        credentials, grpc.access_token_call_credentials(token)
    )


def _request_id_filler() -> Callable[[str, Any], Any]:
    """What the interceptors do to a request: a deduplicated write without a
    request_id gets a copy of itself with a fresh one (the caller's message is left
    as it was); anything else goes as it is."""
    paths = {f"/{service}/{method}" for service, method in DEDUPLICATED_WRITES}

    def fill(method: str | bytes, request: Any) -> Any:
        name = method.decode() if isinstance(method, bytes) else method
        if name not in paths or request.request_id:
            return request
        filled = type(request)()
        filled.CopyFrom(request)
        filled.request_id = str(uuid.uuid4())
        return filled

    return fill


class _FillRequestIds(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self) -> None:
        self._fill = _request_id_filler()

    async def intercept_unary_unary(
        self, continuation: Any, client_call_details: Any, request: Any
    ) -> Any:
        return await continuation(
            client_call_details, self._fill(client_call_details.method, request)
        )


class _FillRequestIdsSync(grpc.UnaryUnaryClientInterceptor):
    def __init__(self) -> None:
        self._fill = _request_id_filler()

    def intercept_unary_unary(
        self, continuation: Any, client_call_details: Any, request: Any
    ) -> Any:
        return continuation(client_call_details, self._fill(client_call_details.method, request))


def connect(
    addresses: str | Sequence[str],
    *,
    credentials: grpc.ChannelCredentials | None = None,
    token: str | None = None,
    request_ids: bool = True,
    config: Mapping[str, Any] | None = None,
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.aio.Channel:
    """An asyncio channel to the servers at `addresses` (see `target`).

    credentials: TLS (grpc.ssl_channel_credentials); None: plaintext.
    token: a caller's bearer token, sent with every call (needs credentials).
    request_ids: fill in a request_id where a deduplicated write has none; False
      sends requests untouched and does not retry those writes.
    config: a service config of one's own instead of `service_config()`.
    options: further gRPC channel arguments, added after the ones set here."""
    chosen = config if config is not None else service_config(retry_writes=request_ids)
    arguments = _channel_options(chosen, options)
    interceptors = [_FillRequestIds()] if request_ids else None
    secure = _credentials(credentials, token)
    if secure is None:
        return grpc.aio.insecure_channel(
            target(addresses), options=arguments, interceptors=interceptors
        )
    return grpc.aio.secure_channel(
        target(addresses), secure, options=arguments, interceptors=interceptors
    )


def connect_sync(
    addresses: str | Sequence[str],
    *,
    credentials: grpc.ChannelCredentials | None = None,
    token: str | None = None,
    request_ids: bool = True,
    config: Mapping[str, Any] | None = None,
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.Channel:
    """The blocking `grpc.Channel` counterpart of `connect`, with the same arguments."""
    chosen = config if config is not None else service_config(retry_writes=request_ids)
    arguments = _channel_options(chosen, options)
    secure = _credentials(credentials, token)
    channel = (
        grpc.insecure_channel(target(addresses), options=arguments)
        if secure is None
        else grpc.secure_channel(target(addresses), secure, options=arguments)
    )
    return grpc.intercept_channel(channel, _FillRequestIdsSync()) if request_ids else channel
