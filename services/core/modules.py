"""What the composition root gives a module when it mounts the module's servicers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import grpc

from services.core.customer_metrics import CustomerMetricsRegistry
from services.core.pagination import PageTokenCodec
from services.core.passwords import PasswordHasher
from services.core.settings import Settings
from services.core.tenancy import TenantDatabase


@dataclass(frozen=True)
class ModuleContext:
    """Shared dependencies, created once per process."""

    settings: Settings
    database: TenantDatabase
    passwords: PasswordHasher
    page_tokens: PageTokenCodec
    # Modules register their customer metrics providers here while mounting.
    customer_metrics: CustomerMetricsRegistry


class MountFunction(Protocol):
    """Adds a module's servicers to `server`; returns the full names of the services it
    added, for reflection and health."""

    def __call__(self, server: grpc.aio.Server, context: ModuleContext) -> list[str]: ...
