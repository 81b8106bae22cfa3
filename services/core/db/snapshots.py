"""Snapshots: the immutable dataclasses that queries return instead of ORM instances,
whose construction costs more CPU than the queries that fill them. A module's
snapshot names its fields after its table's columns; the queries select
`columns_of(...)`, and `of(row)` builds the snapshot from such a row."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any, Self

from sqlalchemy import ColumnElement

from services.core.db.engine import Base


class RowSnapshot:
    """Base of a frozen, slotted dataclass made of one row's columns."""

    __slots__ = ()

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> Self:
        """From a row of `columns_of(model, cls)`, by position: by name costs three
        times as much CPU on asyncpg's records, 50 times a page."""
        return cls(*row.values())


def columns_of(
    model: type[Base], snapshot: type, *, besides: tuple[str, ...] = ()
) -> list[ColumnElement[Any]]:
    """The model's columns a snapshot is made of, in its field order; `besides` names
    the snapshot's fields that are not columns of the model."""
    table = model.__table__
    return [table.c[field.name] for field in fields(snapshot) if field.name not in besides]
