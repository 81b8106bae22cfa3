"""Customer metrics from any module: the seed's MetricsProvider pattern.

A module that knows something about customers (orders: how much they bought) can
implement CustomerMetricsProvider and register it. Whoever shows a customer's
metrics collects them from the registry without importing the modules that
computed them, so customers stays ignorant of its consumers."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True)
class Money:
    """An amount of money: an integer number of the currency's minor unit, never a
    float (1999 with "EUR" is 19.99 EUR)."""

    currency_code: str  # ISO 4217, upper case
    amount_minor: int


@dataclass(frozen=True)
class CustomerMetric:
    """One figure about one customer."""

    # Stable, snake_case, unique within its provider ("total_orders"); an amount of
    # money appears once per currency.
    name: str
    # For people: "Total orders".
    label: str
    # A count, an amount of money, a time, or None when there is nothing to measure
    # yet (the first order of a customer without orders).
    value: int | Money | datetime | None


class CustomerMetricsProvider(Protocol):
    """What a module implements to contribute customer metrics."""

    @property
    def source(self) -> str:
        """The contributing module's name, such as "orders"."""
        ...

    async def customer_metrics(self, store_id: int, customer_id: int) -> list[CustomerMetric]:
        """The customer's metrics. NOT_FOUND when the store has no such customer."""
        ...


class CustomerMetricsRegistry:
    """The providers of the modules mounted in this process, by source."""

    def __init__(self) -> None:
        self._providers: dict[str, CustomerMetricsProvider] = {}

    def register(self, provider: CustomerMetricsProvider) -> None:
        if provider.source in self._providers:
            raise ValueError(f"a customer metrics provider for {provider.source!r} is registered")
        self._providers[provider.source] = provider

    @property
    def sources(self) -> Sequence[str]:
        return list(self._providers)

    async def collect(self, store_id: int, customer_id: int) -> dict[str, list[CustomerMetric]]:
        """Every provider's metrics for the customer, by source, computed concurrently."""
        providers = list(self._providers.values())
        results = await asyncio.gather(
            *(provider.customer_metrics(store_id, customer_id) for provider in providers)
        )
        return {
            provider.source: metrics for provider, metrics in zip(providers, results, strict=True)
        }
