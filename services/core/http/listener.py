"""Serving the gateway: uvicorn, in the event loop of the gRPC server, on sockets the
composition root bound (shared among a supervisor's workers with SO_REUSEPORT)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
import ssl
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import uvicorn

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class HttpTls:
    """The certificate files of the gRPC server's TLS, served on the HTTP port too."""

    cert_file: str
    key_file: str
    client_ca_file: str = ""  # set: client certificates are required (mutual TLS)


class _EmbeddedServer(uvicorn.Server):
    """uvicorn as a guest of the process: the host owns SIGTERM and SIGINT (it drains
    gRPC and HTTP together), and learns when the sockets accept connections."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.accepting = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self.accepting.set()


class HttpListener:
    """Serves an ASGI application on bound sockets until `stop()`."""

    def __init__(
        self,
        app: Any,
        sockets: Sequence[socket.socket],
        *,
        grace_seconds: float,
        tls: HttpTls | None = None,
    ) -> None:
        self.sockets = list(sockets)
        config = uvicorn.Config(
            app,
            # httptools, uvicorn's C parser of HTTP/1.1, rather than pure-Python h11.
            http="httptools",
            lifespan="off",
            # The process's logging stays as services.core.logs configured it, and a
            # line per request would cost more than some requests.
            log_config=None,
            access_log=False,
            # The peer's address is the client's: X-Forwarded-For is not trusted.
            proxy_headers=False,
            server_header=False,
            timeout_graceful_shutdown=math.ceil(grace_seconds),
            **_tls_options(tls),
        )
        self._server = _EmbeddedServer(config)
        self._serving: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Returns once the sockets accept connections."""
        self._serving = asyncio.create_task(self._server.serve(self.sockets))
        accepting = asyncio.create_task(self._server.accepting.wait())
        await asyncio.wait({self._serving, accepting}, return_when=asyncio.FIRST_COMPLETED)
        if not accepting.done():
            accepting.cancel()
            await self._serving  # raises what stopped it
            raise RuntimeError("the HTTP listener stopped as it started")

    async def stop(self, grace_seconds: float | None = None) -> None:
        """Stops accepting connections at once, closes idle ones, and returns when the
        requests in flight have been answered, or after `grace_seconds` (default: the
        one given at construction), which cancels those still running."""
        if self._serving is None:
            return
        if grace_seconds is not None:
            self._server.config.timeout_graceful_shutdown = math.ceil(grace_seconds)
        self._server.should_exit = True
        await self._serving


def _tls_options(tls: HttpTls | None) -> dict[str, Any]:
    if tls is None:
        return {}
    options: dict[str, Any] = {"ssl_certfile": tls.cert_file, "ssl_keyfile": tls.key_file}
    if tls.client_ca_file:
        options |= {"ssl_ca_certs": tls.client_ca_file, "ssl_cert_reqs": ssl.CERT_REQUIRED}
    return options
