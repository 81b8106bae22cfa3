"""The orders service layer: placing orders, reading and listing them, and moving
them through their statuses. Plain values in, models or domain errors out; no gRPC
here, so it is testable without a server."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, cast

from iso4217 import Currency
from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Select,
    Table,
    bindparam,
    select,
    tuple_,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import joinedload, selectinload

from services.core.database import UtcDateTime, utc_now
from services.core.errors import FailedPrecondition, InvalidArgument, NotFound, Violations
from services.core.idempotency import RequestKey, create_once, remember
from services.core.pagination import PageTokenCodec, resolve_page_size
from services.core.sql import Transaction, insert_row
from services.core.stores import check_store_id, next_store_number
from services.core.tenancy import TenantDatabase
from services.customers import validation
from services.customers.models import CustomerSnapshot
from services.customers.service import share_locked_customer
from services.orders.models import (
    LineItemSnapshot,
    Order,
    OrderLineItem,
    OrderSnapshot,
    OrderStatus,
)

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500

MAX_LINE_ITEMS = 100
MAX_QUANTITY = 100_000
SKU_MAX = 64
ITEM_NAME_MAX = 200
# Ten billion major units of a two-decimal currency: far above any real order, far
# below where int64 arithmetic in any client language could overflow.
MAX_AMOUNT_MINOR = 10**12

# CreateOrder's INSERTs.
_INSERT_ORDER = insert_row(cast(Table, Order.__table__))
_INSERT_LINE_ITEMS = insert_row(cast(Table, OrderLineItem.__table__))

ORDER_COUNTER = "order"
# Operation name of the idempotency keys of CreateOrder; stored, so never rename it.
CREATE_ORDER = "orders.CreateOrder"

# Which status may follow which. DELIVERED and CANCELLED are final.
TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    OrderStatus.PENDING: frozenset({OrderStatus.PAID, OrderStatus.CANCELLED}),
    OrderStatus.PAID: frozenset({OrderStatus.SHIPPED, OrderStatus.CANCELLED}),
    OrderStatus.SHIPPED: frozenset({OrderStatus.DELIVERED}),
    OrderStatus.DELIVERED: frozenset(),
    OrderStatus.CANCELLED: frozenset(),
}


@dataclass(frozen=True)
class NewLineItem:
    sku: str
    name: str
    quantity: int
    unit_price_minor: int


@dataclass(frozen=True)
class NewOrder:
    line_items: Sequence[NewLineItem]
    currency_code: str
    # 0 places a guest order.
    customer_id: int = 0
    contact_email: str = ""


@dataclass(frozen=True)
class OrderFilter:
    """ListOrders' filters; None (or 0 for the customer) means "no filter"."""

    status: OrderStatus | None = None
    customer_id: int = 0
    created_from: datetime | None = None
    created_before: datetime | None = None


@dataclass(frozen=True)
class OrderPage:
    orders: Sequence[Order | OrderSnapshot]
    next_page_token: str


def order_number(order_id: int) -> str:
    return f"O-{order_id:06d}"


class OrderService:
    def __init__(self, database: TenantDatabase, page_tokens: PageTokenCodec) -> None:
        self._db = database
        self._page_tokens = page_tokens

    async def create_order(
        self, store_id: int, new: NewOrder, *, request_id: str = ""
    ) -> Order | OrderSnapshot:
        check_store_id(store_id)
        values = _validated_order(new)
        key = RequestKey.parse(CREATE_ORDER, request_id, values)
        return await create_once(
            self._db,
            store_id,
            key,
            create=lambda: self._insert_order(store_id, values, key),
            load=load_order,
        )

    async def _insert_order(
        self, store_id: int, values: dict[str, Any], key: RequestKey | None
    ) -> OrderSnapshot:
        lines = [
            line
            | {
                "line_number": number,
                "line_total_minor": line["quantity"] * line["unit_price_minor"],
            }
            for number, line in enumerate(values["line_items"], start=1)
        ]
        # Fixed Core statements, not the ORM (services.core.sql): on PostgreSQL they go
        # straight to asyncpg. Every create takes the store's counter row lock, so the
        # CPU spent between its statements is time other creates of the store wait.
        async with self._db.statements(store_id, transaction=True) as statements:
            customer = None
            if values["customer_id"]:
                customer = await _orderable_customer(statements, store_id, values["customer_id"])
            # Late, so the store's counter row stays locked only briefly; the time is
            # taken under that lock, so order numbers and create times agree.
            order_id = await next_store_number(statements, store_id, ORDER_COUNTER)
            now = utc_now()
            order_values = {
                "store_id": store_id,
                "order_id": order_id,
                "order_number": order_number(order_id),
                "customer_id": values["customer_id"] or None,
                "status": OrderStatus.PENDING.value,
                "currency_code": values["currency_code"],
                "total_minor": sum(line["line_total_minor"] for line in lines),
                "contact_email": values["contact_email"],
                "created_at": now,
                "updated_at": now,
            }
            for line in lines:
                line.update(store_id=store_id, order_id=order_id)
            await statements.execute(_INSERT_ORDER, order_values)
            await statements.execute_many(_INSERT_LINE_ITEMS, lines)
            if key:
                await remember(statements, store_id, key, order_id)
        return OrderSnapshot(
            **order_values,
            line_items=tuple(LineItemSnapshot(**line) for line in lines),
            customer=customer,
        )

    async def get_order(self, store_id: int, order_id: int) -> Order:
        _check_order_id(order_id)
        async with self._db.reading(store_id) as uow:
            return await load_order(uow.session, store_id, order_id)

    async def list_orders(
        self,
        store_id: int,
        *,
        page_size: int = 0,
        page_token: str = "",
        filters: OrderFilter = OrderFilter(),
    ) -> OrderPage:
        check_store_id(store_id)
        if filters.customer_id < 0:
            raise InvalidArgument.of("customer_id", "must be a positive customer id, or 0")
        if (
            filters.created_from is not None
            and filters.created_before is not None
            and filters.created_before <= filters.created_from
        ):
            raise InvalidArgument.of("create_time_end", "must be later than create_time_start")
        conditions = [Order.store_id == store_id]
        if filters.status is not None:
            conditions.append(Order.status == filters.status.value)
        if filters.customer_id:
            conditions.append(Order.customer_id == filters.customer_id)
        if filters.created_from is not None:
            conditions.append(Order.created_at >= filters.created_from)
        if filters.created_before is not None:
            conditions.append(Order.created_at < filters.created_before)
        scope = {"list": "orders", "store_id": store_id} | {
            name: str(value) for name, value in asdict(filters).items()
        }
        async with self._db.reading(store_id) as uow:
            return await _newest_first_page(
                uow.session,
                self._page_tokens,
                scope,
                conditions,
                page_size=page_size,
                page_token=page_token,
            )

    async def update_status(self, store_id: int, order_id: int, status: OrderStatus) -> Order:
        _check_order_id(order_id)
        sources = [source for source, targets in TRANSITIONS.items() if status in targets]
        async with self._db.writing(store_id) as uow:
            # One conditional UPDATE: the check and the change are atomic without a
            # lock held across round trips, and a concurrent change cannot slip between.
            changed = await uow.session.scalar(
                update(Order)
                .where(
                    Order.store_id == store_id,
                    Order.order_id == order_id,
                    Order.status.in_([source.value for source in sources]),
                )
                .values(status=status.value, updated_at=utc_now())
                .returning(Order.order_id)
            )
            if changed is None:
                current = await uow.session.scalar(
                    select(Order.status).where(
                        Order.store_id == store_id, Order.order_id == order_id
                    )
                )
                if current is None:
                    raise NotFound("order", str(order_id))
                raise _invalid_transition(OrderStatus(current), status)
            order = await load_order(uow.session, store_id, order_id)
            await uow.commit()
        return order


# -- reading orders with the ORM ---------------------------------------------------------


def _with_details(statement: Select[Order]) -> Select[Order]:
    """Loads the lines (one extra query for the whole page) and the customer (joined)."""
    return statement.options(selectinload(Order.line_items), joinedload(Order.customer))


async def load_order(session: AsyncSession, store_id: int, order_id: int) -> Order:
    order = await session.scalar(
        _with_details(select(Order).where(Order.store_id == store_id, Order.order_id == order_id))
    )
    if order is None:
        raise NotFound("order", str(order_id))
    return order


async def _newest_first_page(
    session: AsyncSession,
    page_tokens: PageTokenCodec,
    scope: dict[str, Any],
    conditions: list[ColumnElement[bool]],
    *,
    page_size: int,
    page_token: str,
) -> OrderPage:
    """One page of the orders matching `conditions`, newest first, by the keyset
    (created_at, order_id)."""
    size = resolve_page_size(page_size, default=DEFAULT_PAGE_SIZE, maximum=MAX_PAGE_SIZE)
    if page_token:
        created_at, order_id = page_tokens.decode(page_token, scope)
        position = tuple_(
            bindparam("after_created_at", datetime.fromisoformat(created_at), UtcDateTime()),
            bindparam("after_order_id", order_id, BigInteger()),
        )
        conditions = [*conditions, tuple_(Order.created_at, Order.order_id) < position]
    statement = (
        select(Order)
        .where(*conditions)
        .order_by(Order.created_at.desc(), Order.order_id.desc())
        .limit(size + 1)
    )
    orders = list(await session.scalars(_with_details(statement)))
    page, token = page_tokens.cut(
        orders, size, scope, lambda last: [last.created_at.isoformat(), last.order_id]
    )
    return OrderPage(page, token)


# -- helpers -----------------------------------------------------------------------------


async def _orderable_customer(
    statements: Transaction, store_id: int, customer_id: int
) -> CustomerSnapshot:
    customer = await share_locked_customer(statements, store_id, customer_id)
    if not customer.is_active:
        raise FailedPrecondition(
            f"customer {customer_id} is inactive and cannot place orders",
            reason="CUSTOMER_INACTIVE",
            metadata={"customer_id": customer_id},
        )
    return customer


def _check_order_id(order_id: int) -> None:
    if order_id <= 0:
        raise InvalidArgument.of("order_id", "must be a positive order id")


def _invalid_transition(current: OrderStatus, requested: OrderStatus) -> FailedPrecondition:
    allowed = sorted(target.name for target in TRANSITIONS[current])
    return FailedPrecondition(
        f"an order that is {current.name} cannot become {requested.name}; "
        f"allowed: {', '.join(allowed) or 'none (final status)'}",
        reason="INVALID_STATUS_TRANSITION",
        metadata={"current_status": current.name, "requested_status": requested.name},
    )


def _validated_order(new: NewOrder) -> dict[str, Any]:
    """The order's normalized values, or INVALID_ARGUMENT naming every problem."""
    problems = Violations()
    if new.customer_id < 0:
        problems.add("customer_id", "must be a positive customer id, or 0 for a guest order")
    currency_code = new.currency_code.strip().upper()
    if not _is_currency(currency_code):
        problems.add("currency_code", 'must be an ISO 4217 currency code such as "EUR"')
    contact_email = new.contact_email.strip()
    if contact_email:
        contact_email = validation.email(problems, "contact_email", contact_email)
    if not new.line_items:
        problems.add("line_items", "must have at least one line")
    elif len(new.line_items) > MAX_LINE_ITEMS:
        problems.add("line_items", f"must have at most {MAX_LINE_ITEMS} lines")
    lines = [
        _validated_line(problems, f"line_items[{index}].", line)
        for index, line in enumerate(new.line_items[:MAX_LINE_ITEMS])
    ]
    if not problems.items:
        total = sum(line["quantity"] * line["unit_price_minor"] for line in lines)
        if total > MAX_AMOUNT_MINOR:
            problems.add("line_items", f"the order total must be at most {MAX_AMOUNT_MINOR}")
    problems.raise_if_any()
    return {
        "customer_id": new.customer_id,
        "currency_code": currency_code,
        "contact_email": contact_email,
        "line_items": lines,
    }


def _validated_line(problems: Violations, prefix: str, line: NewLineItem) -> dict[str, Any]:
    sku = validation.text(problems, prefix + "sku", line.sku, max_length=SKU_MAX, required=True)
    name = validation.text(
        problems, prefix + "name", line.name, max_length=ITEM_NAME_MAX, required=True
    )
    if not 0 < line.quantity <= MAX_QUANTITY:
        problems.add(prefix + "quantity", f"must be from 1 to {MAX_QUANTITY}")
    if not 0 <= line.unit_price_minor <= MAX_AMOUNT_MINOR:
        problems.add(prefix + "unit_price_minor", f"must be from 0 to {MAX_AMOUNT_MINOR}")
    return {
        "sku": sku,
        "name": name,
        "quantity": line.quantity,
        "unit_price_minor": line.unit_price_minor,
    }


def _is_currency(code: str) -> bool:
    """An ISO 4217 code of money with a minor unit: not XXX (no currency), XAU (gold)
    and the like, whose amounts have no minor unit to count in."""
    try:
        return Currency(code).exponent is not None
    except ValueError:
        return False
