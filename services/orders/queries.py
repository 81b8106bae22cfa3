"""Every statement of the orders module, in one place: fixed Core statements
(services.core.db.statements) that take the unit of work and return snapshots. Each
statement is compiled once; the unit of work binds `store_id` into every one.

Every listing is newest first by the keyset (created_at, order_id), and each filter
has an index that starts with it (services.orders.models), so a page is one index
range however deep; its lines, and the customers of its orders, are read in one
statement each by the page's own keys."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import asdict, replace
from datetime import datetime, timedelta
from enum import Enum
from typing import Any, NamedTuple, cast

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    SmallInteger,
    Subquery,
    Table,
    bindparam,
    delete,
    func,
    literal,
    or_,
    select,
    true,
    tuple_,
    union_all,
    update,
)

from services.core.db.engine import UtcDateTime, upsert_insert, utc_now
from services.core.db.retention import delete_oldest
from services.core.db.statements import (
    DIALECTS,
    Statement,
    Transaction,
    in_store,
    insert_row,
    rows_of_keys,
)
from services.core.db.unit_of_work import UnitOfWork
from services.core.domain.errors import NotFound
from services.customers.api import CustomerSnapshot, get_customer
from services.customers.models import Customer
from services.orders.models import (
    LINE_ITEM_COLUMNS,
    ORDER_COLUMNS,
    STATISTICS_SLOTS,
    CustomerOrderStatistics,
    LineItemSnapshot,
    Order,
    OrderLineItem,
    OrderRevision,
    OrderSnapshot,
    OrderStatus,
    statistics_slot,
)
from services.orders.rules import (
    MAX_STATUS_FILTERS,
    CustomerOrderStats,
    KeptTotals,
    OrderFilter,
    PageRequest,
    StatisticsDrift,
    drifts_of,
    sources_of,
    statistics_change,
    stats_of,
)

_ORDER_KEY = in_store(Order, "order_id")
OLD_STATUS = "old_status"
_GET_ORDER = Statement(select(*ORDER_COLUMNS).where(*_ORDER_KEY))
_ORDER_STATE = Statement(select(Order.status, Order.revision).where(*_ORDER_KEY))
_ORDER_LINES = Statement(
    select(*LINE_ITEM_COLUMNS)
    .where(*in_store(OrderLineItem, "order_id"))
    .order_by(OrderLineItem.line_number)
)
_INSERT_ORDER = insert_row(cast(Table, Order.__table__))
_INSERT_LINE_ITEMS = insert_row(cast(Table, OrderLineItem.__table__))


_INSERT_REVISION = insert_row(cast(Table, OrderRevision.__table__))
_REVISION = Statement(
    select(
        OrderRevision.status,
        OrderRevision.tracking_reference,
        OrderRevision.cancel_reason,
        OrderRevision.updated_at,
    ).where(*in_store(OrderRevision, "order_id", "revision"))
)


# On PostgreSQL, the order's row as it is when locked, before the UPDATE that joins it
# changes it: what the UPDATE returns as the status it moved the order from. Locked,
# so that an UPDATE that waited for another transaction's change of the order reads
# the status that change left, not the one its snapshot saw.
_CURRENT = cast(Table, Order.__table__).alias("locked_order")
_LOCKED_STATUS = (
    select(_CURRENT.c.order_id.label("locked_order_id"), _CURRENT.c.status.label(OLD_STATUS))
    .where(_CURRENT.c.store_id == bindparam("store_id"))
    .where(_CURRENT.c.order_id == bindparam("order_id"))
    .with_for_update()
    .subquery("locked")
)


def _move_order(status: OrderStatus, *, with_etag: bool, dialect: str) -> Statement:
    """One conditional UPDATE into `status`, from the statuses allowed to precede it
    (and, with an etag, only at the revision it names): the checks and the change are
    one atomic step, without a lock held across round trips. Only ShipOrder sets a
    tracking reference and only CancelOrder a reason; they never change after. It
    returns the order as changed and, on PostgreSQL when more than one status may
    precede `status`, the status it had (OLD_STATUS; SQLite's RETURNING sees only the
    updated table)."""
    conditions = [
        *_ORDER_KEY,
        or_(*(Order.status == source.value for source in sources_of(status))),
    ]
    returned = list(ORDER_COLUMNS)
    if dialect == "postgresql" and len(sources_of(status)) > 1:
        # The join with the locked row (one row, the same order).
        conditions.append(Order.order_id == _LOCKED_STATUS.c.locked_order_id)
        returned.append(_LOCKED_STATUS.c[OLD_STATUS])
    if with_etag:
        conditions.append(Order.revision == bindparam("expected_revision"))
    changes: dict[str, Any] = {
        "status": status.value,
        "updated_at": bindparam("new_updated_at"),
        "revision": Order.revision + 1,
    }
    if status is OrderStatus.SHIPPED:
        changes["tracking_reference"] = bindparam("new_tracking_reference")
    if status is OrderStatus.CANCELLED:
        changes["cancel_reason"] = bindparam("new_cancel_reason")
    return Statement(update(Order).where(*conditions).values(changes).returning(*returned))


_MOVE_ORDER = {
    (dialect, status, with_etag): _move_order(status, with_etag=with_etag, dialect=dialect)
    for dialect in DIALECTS
    for status in OrderStatus
    if sources_of(status)
    for with_etag in (False, True)
}


async def get_order(uow: UnitOfWork, order_id: int) -> OrderSnapshot:
    """The store's order with its lines and its customer, or NOT_FOUND."""
    row = await uow.fetch_one(_GET_ORDER, {"order_id": order_id})
    if row is None:
        raise NotFound("order", str(order_id))
    return await _with_details(uow, row)


async def insert_order(
    uow: UnitOfWork,
    order: Mapping[str, Any],
    lines: Sequence[Mapping[str, Any]],
    customer: CustomerSnapshot | None,
) -> OrderSnapshot:
    """Inserts an order and its lines, given every column but the store's."""
    await uow.execute(_INSERT_ORDER, order)
    order_id = order["order_id"]
    await uow.execute_many(_INSERT_LINE_ITEMS, [{**line, "order_id": order_id} for line in lines])
    store: dict[str, Any] = {"store_id": uow.store_id}
    return OrderSnapshot(
        **store,
        **order,
        line_items=tuple(LineItemSnapshot(**store, order_id=order_id, **line) for line in lines),
        customer=customer,
    )


class Moved(NamedTuple):
    """An order as a status change left it, and the status it had before."""

    order: OrderSnapshot
    old_status: OrderStatus


async def move_order(
    uow: UnitOfWork,
    order_id: int,
    status: OrderStatus,
    *,
    revision: int | None = None,
    tracking_reference: str = "",
    cancel_reason: str = "",
) -> Moved | None:
    """Gives the order `status` if the status machine allows it from the order's
    current one and the order is at `revision` (when given), and records what the
    change left; None if not (or there is no such order: see order_state)."""
    sources = sources_of(status)
    if not sources:  # nothing may become it
        return None
    params: dict[str, Any] = {
        "order_id": order_id,
        "new_updated_at": utc_now(),
        "new_tracking_reference": tracking_reference,
        "new_cancel_reason": cancel_reason,
    }
    if revision is not None:
        params["expected_revision"] = revision
    # The status the order had: the only one it can have come from, else returned
    # by the UPDATE (PostgreSQL) or read just before it (SQLite, which has one writer
    # at a time: nothing changes the order between the read and the UPDATE).
    old_status = sources[0]
    if len(sources) > 1 and uow.dialect != "postgresql":
        state = await order_state(uow, order_id)
        if state is None:
            return None
        old_status = state[0]
    row = await uow.fetch_one(_MOVE_ORDER[uow.dialect, status, revision is not None], params)
    if row is None:
        return None
    columns = dict(row)
    if OLD_STATUS in columns:
        old_status = OrderStatus(columns.pop(OLD_STATUS))
    moved = await _with_details(uow, columns)
    await uow.execute(
        _INSERT_REVISION,
        {
            "order_id": order_id,
            "revision": moved.revision,
            "status": moved.status,
            "tracking_reference": moved.tracking_reference,
            "cancel_reason": moved.cancel_reason,
            "updated_at": moved.updated_at,
        },
    )
    return Moved(moved, old_status)


async def order_state(uow: UnitOfWork, order_id: int) -> tuple[OrderStatus, int] | None:
    """The order's status and revision; None when the store has no such order."""
    row = await uow.fetch_one(_ORDER_STATE, {"order_id": order_id})
    return None if row is None else (OrderStatus(row["status"]), int(row["revision"]))


async def order_at_revision(uow: UnitOfWork, order_id: int, revision: int) -> OrderSnapshot:
    """The order as the change that made `revision` left it: its fields that change
    with its status as they were then, the others (and its customer) as they are."""
    order = await get_order(uow, order_id)
    if order.revision == revision:
        return order
    then = await uow.fetch_one(_REVISION, {"order_id": order_id, "revision": revision})
    if then is None:  # written with the key that names it: never, short of a bug
        return order
    return replace(order, revision=revision, **dict(then))


# A revision outlives the request_id that names it by this much, so that a key still
# remembered never lacks its revision (both are written in one transaction, their
# times a moment apart).
REVISION_MARGIN = timedelta(days=1)
_PURGE_REVISIONS = {
    dialect: delete_oldest(OrderRevision, OrderRevision.updated_at, dialect) for dialect in DIALECTS
}


async def purge_expired_revisions(statements: Transaction, before: datetime, batch: int) -> int:
    """Deletes up to `batch` revisions that no remembered request_id (created at or
    after `before`) can name any more; returns how many."""
    params = {"before": before - REVISION_MARGIN, "batch": batch}
    return len(await statements.fetch(_PURGE_REVISIONS[statements.dialect], params))


async def _with_details(uow: UnitOfWork, row: Mapping[str, Any]) -> OrderSnapshot:
    lines = await uow.fetch(_ORDER_LINES, {"order_id": row["order_id"]})
    customer_id = row["customer_id"]
    customer = None if customer_id is None else await get_customer(uow, customer_id)
    return OrderSnapshot.of(row, tuple(LineItemSnapshot.of(line) for line in lines), customer)


# -- pages, newest first -------------------------------------------------------------------


class _Customers(Enum):
    """Whose orders a page query reads."""

    ANY = "any"
    ONE = "one"
    # customer_id IS NULL: ix_orders_customer serves it like one customer's id.
    GUESTS = "guests"


class _Shape(NamedTuple):
    """Which filters a page query has: each combination is one fixed statement."""

    statuses: bool
    customers: _Customers
    created_from: bool
    created_before: bool

    @classmethod
    def of(cls, filters: OrderFilter) -> _Shape:
        customers = _Customers.ANY
        if filters.customer_id:
            customers = _Customers.ONE
        elif filters.guests_only:
            customers = _Customers.GUESTS
        return cls(
            bool(filters.statuses),
            customers,
            filters.created_from is not None,
            filters.created_before is not None,
        )


_KEYSET = tuple_(Order.created_at, Order.order_id)


def _position(time: str, order_id: str) -> ColumnElement[Any]:
    return tuple_(bindparam(time, type_=UtcDateTime()), bindparam(order_id, type_=BigInteger()))


def _matching(shape: _Shape) -> list[ColumnElement[bool]]:
    """The conditions of a shape but its statuses (see _page)."""
    conditions = list(in_store(Order))
    if shape.customers is _Customers.ONE:
        conditions.append(Order.customer_id == bindparam("customer_id"))
    if shape.customers is _Customers.GUESTS:
        conditions.append(Order.customer_id.is_(None))
    if shape.created_from:
        conditions.append(Order.created_at >= bindparam("created_from", type_=UtcDateTime()))
    if shape.created_before:
        conditions.append(Order.created_at < bindparam("created_before", type_=UtcDateTime()))
    return conditions


def _status_param(index: int) -> str:
    return f"status_{index}"


def _page(shape: _Shape, after: bool) -> Statement:
    """A page of the shape. With statuses, one newest-first branch per status, each a
    range of ix_orders_status (or of the customer's index) that stops at the page's
    size, merged and cut again: a page reads at most a page per status however many
    orders match, where one `status IN (...)` range would have to sort them all. A
    branch whose status parameter is NULL (fewer statuses than branches) reads
    nothing."""
    conditions = _matching(shape)
    if after:
        conditions.append(_position("after_time", "after_id") > _KEYSET)

    def newest(*where: ColumnElement[bool]) -> Any:
        return (
            select(*ORDER_COLUMNS)
            .where(*conditions, *where)
            .order_by(Order.created_at.desc(), Order.order_id.desc())
            .limit(bindparam("limit"))
        )

    if not shape.statuses:
        return Statement(newest())
    branches = [
        select(newest(Order.status == bindparam(_status_param(index))).subquery(f"s{index}"))
        for index in range(MAX_STATUS_FILTERS)
    ]
    merged = union_all(*branches).subquery("matching")
    return Statement(
        select(merged)
        .order_by(merged.c.created_at.desc(), merged.c.order_id.desc())
        .limit(bindparam("limit"))
    )


# Every combination of filters, built (not yet compiled) once at import.
_ORDER_PAGES = {
    (shape, after): _page(shape, after)
    for shape in itertools.starmap(
        _Shape, itertools.product((False, True), _Customers, (False, True), (False, True))
    )
    for after in (False, True)
}


# A page's lines and customers, by the page's own keys. (Deriving the lines from the
# page's range instead, a generic plan cached while the tables were nearly empty
# walked every line of the store for every call.)
_PAGE_LINES = rows_of_keys(
    OrderLineItem, "order_id", "order_ids", order_by=("order_id", "line_number")
)
_PAGE_CUSTOMERS = rows_of_keys(Customer, "customer_id", "customer_ids")


async def orders_page(
    uow: UnitOfWork,
    filters: OrderFilter,
    request: PageRequest,
    *,
    customer: CustomerSnapshot | None = None,
) -> list[OrderSnapshot]:
    """Up to request.size + 1 orders matching `filters`, newest first, older than
    request.after, with their lines and customers; `customer` is the customer of
    every order, when the filter is one customer and the caller has read them."""
    shape = _Shape.of(filters)
    params: dict[str, Any] = {"limit": request.size + 1}
    if filters.statuses:
        statuses = [status.value for status in filters.statuses]
        for index in range(MAX_STATUS_FILTERS):
            params[_status_param(index)] = statuses[index] if index < len(statuses) else None
    params |= {
        name: value
        for name, value in (
            ("customer_id", filters.customer_id),
            ("created_from", filters.created_from),
            ("created_before", filters.created_before),
        )
        if value
    }
    after = request.after is not None
    if request.after is not None:
        params["after_time"], params["after_id"] = request.after
    rows = await uow.fetch(_ORDER_PAGES[shape, after], params)
    if not rows:
        return []
    order_ids = [row["order_id"] for row in rows]
    lines: dict[int, list[LineItemSnapshot]] = {}
    for line in await uow.fetch(_PAGE_LINES[uow.dialect], {"order_ids": order_ids}):
        lines.setdefault(line["order_id"], []).append(LineItemSnapshot.of(line))
    customers: dict[int | None, CustomerSnapshot] = {}
    if customer is not None:
        customers[customer.customer_id] = customer
    else:
        customer_ids = sorted({row["customer_id"] for row in rows} - {None})
        if customer_ids:
            found = await uow.fetch(_PAGE_CUSTOMERS[uow.dialect], {"customer_ids": customer_ids})
            for snapshot in map(CustomerSnapshot.of, found):
                customers[snapshot.customer_id] = snapshot
    return [
        OrderSnapshot.of(
            row, tuple(lines.get(row["order_id"], ())), customers.get(row["customer_id"])
        )
        for row in rows
    ]


# -- a customer's orders, counted ----------------------------------------------------------

_OF_CUSTOMER = in_store(Order, "customer_id")
_COUNT = Statement(select(func.count()).where(*_OF_CUSTOMER))
_COUNT_WITH_STATUS = Statement(
    select(func.count()).where(*_OF_CUSTOMER, Order.status == bindparam("status"))
)


async def count_customer_orders(
    uow: UnitOfWork, customer_id: int, status: OrderStatus | None
) -> int:
    if status is None:
        return int(await uow.scalar(_COUNT, {"customer_id": customer_id}))
    params = {"customer_id": customer_id, "status": status.value}
    return int(await uow.scalar(_COUNT_WITH_STATUS, params))


def _customer_joined(per_currency: Subquery) -> Statement:
    """One round trip: the customer LEFT JOIN its statistics per currency. No row: no
    such customer; one row with a NULL currency: a customer without orders."""
    return Statement(
        select(per_currency)
        .select_from(Customer)
        .outerjoin(per_currency, true())
        .where(*in_store(Customer, "customer_id"))
        .order_by(per_currency.c.currency_code)
    )


def _aggregated_statistics_statement() -> Statement:
    """The statistics from scratch (_customer_joined): the customer's counted orders
    aggregated per currency. What customer_order_stats keeps, read only to check it
    (and by the tests).

    The orders are aggregated in a subquery of their own, not through the join: the
    planner then sees how many orders it reads and hashes them into their few
    currencies. Grouping the join instead, it expected one row and sorted all of a big
    customer's orders, on disk past work_mem. On PostgreSQL the aggregate reads
    ix_orders_customer alone (its INCLUDE columns cover it)."""
    per_currency = (
        select(
            Order.currency_code,
            func.count(Order.order_id).label("order_count"),
            func.sum(Order.total_minor).label("total_minor"),
            func.min(Order.created_at, type_=UtcDateTime()).label("first_time"),
            func.max(Order.created_at, type_=UtcDateTime()).label("last_time"),
        )
        .where(*_OF_CUSTOMER, Order.status != OrderStatus.CANCELLED.value)
        .group_by(Order.currency_code)
        .subquery()
    )
    return _customer_joined(per_currency)


_AGGREGATED_STATISTICS = _aggregated_statistics_statement()
_STATS = CustomerOrderStatistics


def _kept_statistics_statement() -> Statement:
    """The same answer from customer_order_stats: the customer LEFT JOIN its rows
    there, the slots of each currency added up (one range of the primary key, at
    most STATISTICS_SLOTS rows per currency), however many orders."""
    kept = (
        select(
            _STATS.currency_code,
            func.sum(_STATS.order_count).label("order_count"),
            func.sum(_STATS.total_minor).label("total_minor"),
            func.min(_STATS.first_order_at, type_=UtcDateTime()).label("first_time"),
            func.max(_STATS.last_order_at, type_=UtcDateTime()).label("last_time"),
        )
        .where(*in_store(_STATS, "customer_id"))
        .group_by(_STATS.currency_code)
        .subquery()
    )
    return _customer_joined(kept)


_STATISTICS = _kept_statistics_statement()


async def customer_order_stats(uow: UnitOfWork, customer_id: int) -> CustomerOrderStats:
    """The customer's order statistics as kept (customer_order_stats); NOT_FOUND when
    the store has no such customer."""
    rows = await uow.fetch(_STATISTICS, {"customer_id": customer_id})
    if not rows:
        raise NotFound("customer", str(customer_id))
    return stats_of(uow.store_id, customer_id, rows)


async def aggregated_order_stats(uow: UnitOfWork, customer_id: int) -> CustomerOrderStats:
    """The customer's order statistics aggregated from every order (what the kept
    ones must equal); NOT_FOUND when the store has no such customer."""
    rows = await uow.fetch(_AGGREGATED_STATISTICS, {"customer_id": customer_id})
    if not rows:
        raise NotFound("customer", str(customer_id))
    return stats_of(uow.store_id, customer_id, rows)


# -- keeping the statistics: every change that moves them, in its own transaction ------------

_STATS_KEY = in_store(_STATS, "customer_id", "currency_code", "slot")


def _add_to_statistics(dialect: str) -> Statement:
    """Counts orders into their customer's row of the currency and slot, made if missing: one
    atomic INSERT .. ON CONFLICT DO UPDATE, so concurrent orders of a customer each
    add theirs (no lost update) and wait for each other only from here to their
    commit. The earliest and latest times are the least and greatest of the row's and
    the order's (SQLite's two-argument min() and max())."""
    insert = upsert_insert(dialect, _STATS)
    excluded = insert.excluded
    least, greatest = (
        (func.least, func.greatest) if dialect == "postgresql" else (func.min, func.max)
    )
    return Statement(
        insert.values(
            {
                column: bindparam(column)
                for column in (
                    "store_id",
                    "customer_id",
                    "currency_code",
                    "slot",
                    "order_count",
                    "total_minor",
                    "first_order_at",
                    "last_order_at",
                )
            }
        ).on_conflict_do_update(
            index_elements=["store_id", "customer_id", "currency_code", "slot"],
            set_={
                "order_count": _STATS.order_count + excluded.order_count,
                "total_minor": _STATS.total_minor + excluded.total_minor,
                "first_order_at": least(_STATS.first_order_at, excluded.first_order_at),
                "last_order_at": greatest(_STATS.last_order_at, excluded.last_order_at),
            },
        )
    )


_ADD_TO_STATISTICS = {dialect: _add_to_statistics(dialect) for dialect in DIALECTS}
# Takes one order out; returns what is left, to see whether the row is now empty
# or lost its earliest or latest order.
_TAKE_FROM_STATISTICS = Statement(
    update(_STATS)
    .where(*_STATS_KEY)
    .values(
        order_count=_STATS.order_count - 1,
        total_minor=_STATS.total_minor - bindparam("order_total", type_=BigInteger()),
    )
    .returning(_STATS.order_count, _STATS.first_order_at, _STATS.last_order_at)
)
_DROP_EMPTY_STATISTICS = Statement(delete(_STATS).where(*_STATS_KEY, _STATS.order_count == 0))


def _end_of_counted(newest: bool) -> Any:
    """The created_at of the customer's earliest (latest) counted order in the
    currency and slot: the first entry of ix_orders_customer's range from that end
    that matches (on PostgreSQL the index's INCLUDE columns hold the currency and
    status; about one entry in STATISTICS_SLOTS is of the slot)."""
    order = (
        (Order.created_at.desc(), Order.order_id.desc())
        if newest
        else (
            Order.created_at,
            Order.order_id,
        )
    )
    return (
        select(Order.created_at)
        .where(
            *_OF_CUSTOMER,
            Order.currency_code == bindparam("currency_code"),
            Order.status != OrderStatus.CANCELLED.value,
            Order.order_id % STATISTICS_SLOTS == bindparam("slot", type_=SmallInteger()),
        )
        .order_by(*order)
        .limit(1)
        .scalar_subquery()
    )


# After an order that was the earliest or latest stopped counting. Its own statement,
# run once the row is locked (by _TAKE_FROM_STATISTICS): on PostgreSQL its snapshot
# then holds every order whose statistics change committed before ours.
_RECOUNT_ENDS = Statement(
    update(_STATS)
    .where(*_STATS_KEY)
    .values(first_order_at=_end_of_counted(False), last_order_at=_end_of_counted(True))
)


async def count_in_statistics(uow: UnitOfWork, order: OrderSnapshot) -> None:
    """Adds the order to its customer's statistics (nothing for a guest order). Best
    run last before the commit: the customer's row stays locked from here to it."""
    if order.customer_id is None:
        return
    await uow.execute(
        _ADD_TO_STATISTICS[uow.dialect],
        {
            "customer_id": order.customer_id,
            "currency_code": order.currency_code,
            "slot": statistics_slot(order.order_id),
            "order_count": 1,
            "total_minor": order.total_minor,
            "first_order_at": order.created_at,
            "last_order_at": order.created_at,
        },
    )


async def uncount_in_statistics(uow: UnitOfWork, order: OrderSnapshot) -> None:
    """Takes the order out of its customer's statistics (it counted until now): the
    row goes with its last order; its earliest or latest time is found again among
    the orders when it was this one's."""
    if order.customer_id is None:
        return
    key = {
        "customer_id": order.customer_id,
        "currency_code": order.currency_code,
        "slot": statistics_slot(order.order_id),
    }
    left = await uow.fetch_one(_TAKE_FROM_STATISTICS, {**key, "order_total": order.total_minor})
    if left is None:  # no row: drifted (the operators' check reports it)
        return
    if left["order_count"] <= 0:
        await uow.execute(_DROP_EMPTY_STATISTICS, key)
    elif order.created_at in (left["first_order_at"], left["last_order_at"]):
        await uow.execute(_RECOUNT_ENDS, key)


async def follow_status_change(uow: UnitOfWork, moved: Moved) -> None:
    """What a status change does to the order's customer's statistics."""
    change = statistics_change(moved.old_status, OrderStatus(moved.order.status))
    if change > 0:
        await count_in_statistics(uow, moved.order)
    elif change < 0:
        await uncount_in_statistics(uow, moved.order)


# -- checking the kept statistics against the orders (commerce order-stats check) -----------

_IN_RANGE = (bindparam("after", type_=BigInteger()), bindparam("through", type_=BigInteger()))


def _statistics_of_range() -> Statement:
    """The statistics of the store's customers after `after` up to `through`, per
    currency and slot, both as the orders say (source "expected") and as kept
    ("kept"), in one statement: one snapshot, so a change that commits meanwhile is in
    both or in neither."""
    after, through = _IN_RANGE
    slot = Order.order_id % STATISTICS_SLOTS
    expected = (
        select(
            literal("expected").label("source"),
            Order.customer_id,
            Order.currency_code,
            slot.label("slot"),
            func.count(Order.order_id).label("order_count"),
            func.sum(Order.total_minor).label("total_minor"),
            func.min(Order.created_at, type_=UtcDateTime()).label("first_order_at"),
            func.max(Order.created_at, type_=UtcDateTime()).label("last_order_at"),
        )
        .where(
            *in_store(Order),
            Order.customer_id > after,
            Order.customer_id <= through,
            Order.status != OrderStatus.CANCELLED.value,
        )
        .group_by(Order.customer_id, Order.currency_code, slot)
    )
    kept = select(
        literal("kept"),
        _STATS.customer_id,
        _STATS.currency_code,
        _STATS.slot,
        _STATS.order_count,
        _STATS.total_minor,
        _STATS.first_order_at,
        _STATS.last_order_at,
    ).where(*in_store(_STATS), _STATS.customer_id > after, _STATS.customer_id <= through)
    return Statement(union_all(expected, kept))


_STATISTICS_OF_RANGE = _statistics_of_range()
_HIGHEST_CUSTOMER = Statement(select(func.max(Customer.customer_id)).where(*in_store(Customer)))
# The repair's locks: the customer (its creates share-lock it: those in flight end
# first, new ones wait) and its kept rows (its cancels in flight end first).
_LOCK_CUSTOMER = Statement(
    select(Customer.customer_id).where(*in_store(Customer, "customer_id")).with_for_update()
)
_LOCK_KEPT = Statement(
    select(_STATS.currency_code).where(*in_store(_STATS, "customer_id")).with_for_update()
)
_DELETE_KEPT = Statement(delete(_STATS).where(*_STATS_KEY))


def _set_kept(dialect: str) -> Statement:
    insert = upsert_insert(dialect, _STATS)
    columns = [column.name for column in cast(Table, _STATS.__table__).c]
    return Statement(
        insert.values({name: bindparam(name) for name in columns}).on_conflict_do_update(
            index_elements=["store_id", "customer_id", "currency_code", "slot"],
            set_={name: insert.excluded[name] for name in columns[4:]},
        )
    )


_SET_KEPT = {dialect: _set_kept(dialect) for dialect in DIALECTS}


async def highest_customer_id(uow: UnitOfWork) -> int:
    """The store's highest customer id (0 without customers)."""
    return int(await uow.scalar(_HIGHEST_CUSTOMER) or 0)


async def statistics_drift(uow: UnitOfWork, after: int, through: int) -> list[StatisticsDrift]:
    """The kept statistics of the customers in (after, through] that differ from
    their orders'."""
    rows = await uow.fetch(_STATISTICS_OF_RANGE, {"after": after, "through": through})
    sides: dict[str, dict[tuple[int, str, int], KeptTotals]] = {"expected": {}, "kept": {}}
    for row in rows:
        key = (row["customer_id"], row["currency_code"], int(row["slot"]))
        sides[row["source"]][key] = KeptTotals(
            int(row["order_count"]),
            int(row["total_minor"]),  # PostgreSQL's sum(bigint) is numeric
            row["first_order_at"],
            row["last_order_at"],
        )
    return drifts_of(uow.store_id, sides["expected"], sides["kept"])


async def repair_statistics(uow: UnitOfWork, customer_id: int) -> list[StatisticsDrift]:
    """Makes the customer's kept statistics what their orders say, in the unit of
    work's transaction, the customer and their kept rows locked first (on PostgreSQL
    the orders are then read in a snapshot that holds every change whose statistics
    change committed, and the changes after wait for this one). Returns the drift
    it found and mended."""
    params = {"customer_id": customer_id}
    await uow.fetch(_LOCK_CUSTOMER, params)
    await uow.fetch(_LOCK_KEPT, params)
    drifts = await statistics_drift(uow, customer_id - 1, customer_id)
    for drift in drifts:
        key = {
            "customer_id": customer_id,
            "currency_code": drift.currency_code,
            "slot": drift.slot,
        }
        if drift.expected is None:
            await uow.execute(_DELETE_KEPT, key)
        else:
            await uow.execute(_SET_KEPT[uow.dialect], {**key, **asdict(drift.expected)})
    return drifts


# -- erasure (EraseCustomer, through the orders module's customer eraser) ------------------

_CUSTOMER_ORDER_IDS = Statement(
    select(Order.order_id).where(*_OF_CUSTOMER).order_by(Order.order_id)
)
# The personal copies an order keeps: the contact email, and the cancel reason (free
# text a caller wrote, which may name the customer), in the order and in what its
# status changes left in order_revisions. The revision is not bumped (see
# customer_orders.OrderEraser).
_ERASE_ORDERS = Statement(
    update(Order).where(*_OF_CUSTOMER).values(contact_email="", cancel_reason="")
)
_ERASE_REVISIONS = Statement(
    update(OrderRevision)
    .where(
        *in_store(OrderRevision),
        OrderRevision.order_id.in_(select(Order.order_id).where(*_OF_CUSTOMER)),
    )
    .values(cancel_reason="")
)


async def erase_customer_orders(uow: UnitOfWork, customer_id: int) -> list[int]:
    """Empties the personal copies on the customer's orders and their revisions; the
    ids of those orders, ascending."""
    params = {"customer_id": customer_id}
    order_ids = [int(row["order_id"]) for row in await uow.fetch(_CUSTOMER_ORDER_IDS, params)]
    if order_ids:
        await uow.execute(_ERASE_ORDERS, params)
        await uow.execute(_ERASE_REVISIONS, params)
    return order_ids


# -- a customer's orders, oldest first (ExportCustomerData) ----------------------------------


def _customer_orders_oldest_first(after: bool) -> Statement:
    """A batch of one customer's orders, oldest first by the keyset (created_at,
    order_id): one range of ix_orders_customer, however many the customer has."""
    conditions = list(_OF_CUSTOMER)
    if after:
        conditions.append(_position("after_time", "after_id") < _KEYSET)
    return Statement(
        select(*ORDER_COLUMNS)
        .where(*conditions)
        .order_by(Order.created_at, Order.order_id)
        .limit(bindparam("limit"))
    )


_CUSTOMER_ORDERS_OLDEST_FIRST = {
    after: _customer_orders_oldest_first(after) for after in (False, True)
}


async def customer_orders_oldest_first(
    uow: UnitOfWork, customer_id: int, after: tuple[datetime, int] | None, limit: int
) -> list[OrderSnapshot]:
    """Up to `limit` of the customer's orders after the keyset position `after`
    (created_at, order_id; None: from the first), oldest first, with their lines and
    without their customer."""
    params: dict[str, Any] = {"customer_id": customer_id, "limit": limit}
    if after is not None:
        params["after_time"], params["after_id"] = after
    rows = await uow.fetch(_CUSTOMER_ORDERS_OLDEST_FIRST[after is not None], params)
    if not rows:
        return []
    lines: dict[int, list[LineItemSnapshot]] = {}
    order_ids = [row["order_id"] for row in rows]
    for line in await uow.fetch(_PAGE_LINES[uow.dialect], {"order_ids": order_ids}):
        lines.setdefault(line["order_id"], []).append(LineItemSnapshot.of(line))
    return [OrderSnapshot.of(row, tuple(lines.get(row["order_id"], ())), None) for row in rows]
