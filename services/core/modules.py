"""What the composition root gives a module when it mounts the module's servicers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import grpc

from services.core.db.customer_data import CustomerDataRegistry
from services.core.db.retention import RetentionRegistry
from services.core.db.unit_of_work import TenantDatabase
from services.core.domain.customer_metrics import CustomerMetricsRegistry
from services.core.domain.pagination import PageTokenCodec
from services.core.domain.passwords import PasswordHasher
from services.core.events.signals import Signal
from services.core.settings import Settings


@dataclass(frozen=True)
class ModuleContext:
    """Shared dependencies, created once per process."""

    settings: Settings
    database: TenantDatabase
    passwords: PasswordHasher
    page_tokens: PageTokenCodec
    # Modules register their customer metrics providers here while mounting.
    customer_metrics: CustomerMetricsRegistry
    # ... their erasers and exporters of a customer's data.
    customer_data: CustomerDataRegistry
    # ... and how to delete the rows they keep only for a while.
    retention: RetentionRegistry
    # Notified when the relay (in this process or, on PostgreSQL, in any) placed new
    # events in the feed: event streams wait on it.
    events_placed: Signal


class MountFunction(Protocol):
    """Adds a module's servicers to `server`; returns the full names of the services it
    added, for reflection and health."""

    def __call__(self, server: grpc.aio.Server, context: ModuleContext) -> list[str]: ...
