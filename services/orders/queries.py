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
from typing import Any, NamedTuple, cast

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Table,
    bindparam,
    func,
    or_,
    select,
    true,
    tuple_,
    update,
)

from services.core.db.engine import UtcDateTime, utc_now
from services.core.db.statements import Statement, in_store, insert_row, rows_of_keys
from services.core.db.unit_of_work import UnitOfWork
from services.core.domain.errors import NotFound
from services.customers.api import CustomerSnapshot, get_customer
from services.customers.models import Customer
from services.orders.models import (
    LINE_ITEM_COLUMNS,
    ORDER_COLUMNS,
    LineItemSnapshot,
    Order,
    OrderLineItem,
    OrderSnapshot,
    OrderStatus,
)
from services.orders.rules import (
    CustomerOrderStats,
    OrderFilter,
    PageRequest,
    sources_of,
    stats_of,
)

_ORDER_KEY = in_store(Order, "order_id")
_GET_ORDER = Statement(select(*ORDER_COLUMNS).where(*_ORDER_KEY))
_ORDER_STATUS = Statement(select(Order.status).where(*_ORDER_KEY))
_ORDER_LINES = Statement(
    select(*LINE_ITEM_COLUMNS)
    .where(*in_store(OrderLineItem, "order_id"))
    .order_by(OrderLineItem.line_number)
)
_INSERT_ORDER = insert_row(cast(Table, Order.__table__))
_INSERT_LINE_ITEMS = insert_row(cast(Table, OrderLineItem.__table__))


def _move_order(status: OrderStatus) -> Statement:
    """One conditional UPDATE into `status`, from the statuses allowed to precede it:
    the transition is checked and made atomically, without a lock held across round
    trips."""
    allowed = or_(*(Order.status == source.value for source in sources_of(status)))
    return Statement(
        update(Order)
        .where(*_ORDER_KEY, allowed)
        .values(status=status.value, updated_at=bindparam("new_updated_at"))
        .returning(*ORDER_COLUMNS)
    )


_MOVE_ORDER = {status: _move_order(status) for status in OrderStatus if sources_of(status)}


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


async def move_order(uow: UnitOfWork, order_id: int, status: OrderStatus) -> OrderSnapshot | None:
    """Gives the order `status` if the status machine allows it from the order's
    current one; None if it does not (or there is no such order: see order_status)."""
    if status not in _MOVE_ORDER:  # nothing may become it
        return None
    params = {"order_id": order_id, "new_updated_at": utc_now()}
    row = await uow.fetch_one(_MOVE_ORDER[status], params)
    return None if row is None else await _with_details(uow, row)


async def order_status(uow: UnitOfWork, order_id: int) -> OrderStatus | None:
    status = await uow.scalar(_ORDER_STATUS, {"order_id": order_id})
    return None if status is None else OrderStatus(status)


async def _with_details(uow: UnitOfWork, row: Mapping[str, Any]) -> OrderSnapshot:
    lines = await uow.fetch(_ORDER_LINES, {"order_id": row["order_id"]})
    customer_id = row["customer_id"]
    customer = None if customer_id is None else await get_customer(uow, customer_id)
    return OrderSnapshot.of(row, tuple(LineItemSnapshot.of(line) for line in lines), customer)


# -- pages, newest first -------------------------------------------------------------------


class _Shape(NamedTuple):
    """Which filters a page query has: each combination is one fixed statement."""

    status: bool
    customer: bool
    created_from: bool
    created_before: bool

    @classmethod
    def of(cls, filters: OrderFilter) -> _Shape:
        return cls(
            filters.status is not None,
            bool(filters.customer_id),
            filters.created_from is not None,
            filters.created_before is not None,
        )


_KEYSET = tuple_(Order.created_at, Order.order_id)


def _position(time: str, order_id: str) -> ColumnElement[Any]:
    return tuple_(bindparam(time, type_=UtcDateTime()), bindparam(order_id, type_=BigInteger()))


def _matching(shape: _Shape) -> list[ColumnElement[bool]]:
    conditions = list(in_store(Order))
    if shape.status:
        conditions.append(Order.status == bindparam("status"))
    if shape.customer:
        conditions.append(Order.customer_id == bindparam("customer_id"))
    if shape.created_from:
        conditions.append(Order.created_at >= bindparam("created_from", type_=UtcDateTime()))
    if shape.created_before:
        conditions.append(Order.created_at < bindparam("created_before", type_=UtcDateTime()))
    return conditions


def _page(shape: _Shape, after: bool) -> Statement:
    conditions = _matching(shape)
    if after:
        conditions.append(_position("after_time", "after_id") > _KEYSET)
    return Statement(
        select(*ORDER_COLUMNS)
        .where(*conditions)
        .order_by(Order.created_at.desc(), Order.order_id.desc())
        .limit(bindparam("limit"))
    )


# Every combination of filters, built (not yet compiled) once at import.
_ORDER_PAGES = {
    (_Shape(*flags), after): _page(_Shape(*flags), after)
    for flags in itertools.product((False, True), repeat=len(_Shape._fields))
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
    if filters.status is not None:
        params["status"] = filters.status.value
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


def _statistics_statement() -> Statement:
    """One round trip: the customer LEFT JOIN its counted orders aggregated per
    currency. No row: no such customer. One row with a NULL currency: a customer
    without orders.

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
    return Statement(
        select(per_currency)
        .select_from(Customer)
        .outerjoin(per_currency, true())
        .where(*in_store(Customer, "customer_id"))
        .order_by(per_currency.c.currency_code)
    )


_STATISTICS = _statistics_statement()


async def customer_order_stats(uow: UnitOfWork, customer_id: int) -> CustomerOrderStats:
    """The customer's order statistics, aggregated by the database; NOT_FOUND when the
    store has no such customer."""
    rows = await uow.fetch(_STATISTICS, {"customer_id": customer_id})
    if not rows:
        raise NotFound("customer", str(customer_id))
    return stats_of(uow.store_id, customer_id, rows)
