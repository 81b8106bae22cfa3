"""Server reflection (what grpcurl and other tools read), over a descriptor pool that
also resolves RPC methods by their full name."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import FileDescriptor
from grpc_reflection.v1alpha import reflection

SERVICE_NAME: str = reflection.SERVICE_NAME


class MethodResolvingPool:
    """The default descriptor pool, plus methods in FindFileContainingSymbol.

    protobuf's upb pool finds the file of a service, message, enum or field by its
    full name, but not of a method, so `grpcurl describe pkg.Service.Method` answered
    "Symbol not found". A method lives in its service's file."""

    def __init__(self, pool: descriptor_pool.DescriptorPool) -> None:
        self._pool = pool

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)

    def FindFileContainingSymbol(self, symbol: str) -> FileDescriptor:
        try:
            return self._pool.FindFileContainingSymbol(symbol)
        except KeyError:
            # KeyError again when it is no method either: reflection answers NOT_FOUND.
            return self._pool.FindMethodByName(symbol).containing_service.file


def enable_reflection(server: grpc.aio.Server, service_names: Sequence[str]) -> None:
    """Serves reflection for `service_names` (reflection itself included)."""
    reflection.enable_server_reflection(
        [*service_names, SERVICE_NAME],
        server,
        pool=MethodResolvingPool(descriptor_pool.Default()),  # type: ignore[arg-type]
    )
