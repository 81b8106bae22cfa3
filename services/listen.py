"""Who owns a listen address. One `commerce serve` refuses an address another process
listens on; `serve --workers N` shares its port among its own workers only.

The workers listen with SO_REUSEPORT, which lets any process of the same user join the
port. So the supervisor first checks the address with a plain bind (no SO_REUSEPORT:
refused by any listener, and by another supervisor's claim), then claims it with a
socket bound with SO_REUSEPORT alone, never listening, held until it exits: its own
workers join it, while a plain bind (another single server, another supervisor's
check) is refused. Only the instant between the check and the claim is unguarded."""

from __future__ import annotations

import errno
import socket
from typing import Any


class CannotListen(Exception):
    """The server cannot listen on its address; the message says why, in one line, and
    `setting` names the setting that gave the address."""

    def __init__(self, message: str, setting: str = "listen_address") -> None:
        super().__init__(message)
        self.setting = setting


class AddressInUse(CannotListen):
    """Another process listens on the address."""


def _bind_targets(address: str) -> list[tuple[socket.AddressFamily, Any]]:
    host, _, port = address.rpartition(":")
    found = socket.getaddrinfo(
        host.strip("[]") or None, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    return [(family, sockaddr) for family, _, _, _, sockaddr in found]


def _bind_all(address: str, *, reuseaddr: bool, reuseport: bool) -> list[socket.socket]:
    """Binds every address `address` resolves to (as gRPC does); raises AddressInUse
    when one is taken. Addresses the host cannot have (no IPv6, say) are skipped."""
    bound: list[socket.socket] = []
    try:
        for family, sockaddr in _bind_targets(address):
            sock = socket.socket(family, socket.SOCK_STREAM)
            bound.append(sock)
            if reuseaddr:  # a restart beside old connections in TIME_WAIT is no clash
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuseport:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            try:
                sock.bind(sockaddr)
            except OSError as error:
                if error.errno == errno.EADDRINUSE:
                    raise AddressInUse(f"{address} is already in use by another process") from None
                if error.errno != errno.EADDRNOTAVAIL:
                    raise
    except BaseException:
        for sock in bound:
            sock.close()
        raise
    return bound


def check_free(address: str) -> None:
    """Raises AddressInUse when a process listens on `address` (port 0 is always free)."""
    if address.endswith(":0"):
        return
    for sock in _bind_all(address, reuseaddr=True, reuseport=False):
        sock.close()


def claim_for_workers(address: str) -> list[socket.socket]:
    """Checks `address` free, then holds it for this process's SO_REUSEPORT workers
    (see the module's docstring). Keep the returned sockets open while they serve."""
    check_free(address)
    try:
        return _bind_all(address, reuseaddr=False, reuseport=True)
    except AddressInUse:
        # Only old connections in TIME_WAIT of a server without SO_REUSEPORT stand in
        # the way (the check passed): serve unclaimed rather than not at all.
        return []


def listening_sockets(address: str, *, share_port: bool, setting: str) -> list[socket.socket]:
    """Sockets listening on every address `address` resolves to, for a server that
    accepts on them itself (the HTTP gateway; gRPC binds its own). `share_port`: with
    SO_REUSEPORT, for the workers of one supervisor. Raises CannotListen."""
    try:
        sockets = _bind_all(address, reuseaddr=True, reuseport=share_port)
    except AddressInUse as error:
        raise AddressInUse(str(error), setting) from None
    except OSError as error:
        raise CannotListen(f"cannot listen on {address}: {error.strerror}", setting) from None
    if not sockets:
        raise CannotListen(f"cannot listen on {address}: no such local address", setting)
    for sock in sockets:
        sock.listen(1024)
        sock.setblocking(False)
    return sockets
