"""Resource names (AIP-122): the canonical, unique name of a resource, such as
`stores/7/customers/42/addresses/3`, made of collection ids and resource ids.

Every resource but a store lives in a store, and the ids of a store's resources
repeat from one store to the next: only the name with its store is unique. Errors
name resources that way without every raise site passing the store: the unit of
work opens a store scope (`store_scope`), and a name made inside it starts with its
store. The modules pass their own collection ids; this module knows only stores."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

STORES = "stores"

_store_in_scope: ContextVar[int | None] = ContextVar("store_in_scope", default=None)


def resource_name(*segments: str | int) -> str:
    """The name made of alternating collection ids and resource ids:
    ("customers", 42) -> "customers/42"."""
    # map(), not a generator: a page of 50 customers names 50 of them.
    return "/".join(map(str, segments))


def name_in_store(store_id: int, *segments: str | int) -> str:
    """The name of a resource of store `store_id`: ("customers", 42) ->
    "stores/7/customers/42"."""
    return resource_name(STORES, store_id, *segments)


def name_in_scope(*segments: str | int) -> str:
    """The name of a resource of the store in scope; relative to the store (no
    `stores/{id}/` prefix) when no store is in scope."""
    store_id = _store_in_scope.get()
    if store_id is None:
        return resource_name(*segments)
    return name_in_store(store_id, *segments)


@contextmanager
def store_scope(store_id: int) -> Iterator[None]:
    """Names made inside belong to store `store_id` (the unit of work's store)."""
    token = _store_in_scope.set(store_id)
    try:
        yield
    finally:
        _store_in_scope.reset(token)
