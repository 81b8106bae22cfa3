"""The orders module's rules, as plain functions of plain values: what a valid order
is, what it costs, which status may follow which, how a page of orders is cut and
what a customer's order statistics say. No database and no gRPC here, so each is
tested on its own (tests/unit/test_order_rules.py)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from iso4217 import Currency

from services.core.domain import validation
from services.core.domain.errors import FailedPrecondition, InvalidArgument, Violations
from services.core.domain.pagination import PageTokenCodec, resolve_page_size
from services.orders.models import OrderSnapshot, OrderStatus

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500

MAX_LINE_ITEMS = 100
MAX_QUANTITY = 100_000
SKU_MAX = 64
ITEM_NAME_MAX = 200
# Ten billion major units of a two-decimal currency: far above any real order, far
# below where int64 arithmetic in any client language could overflow.
MAX_AMOUNT_MINOR = 10**12

TRACKING_REFERENCE_MAX = 100
CANCEL_REASON_MAX = 200
# ListOrders' `statuses`: as many as there are statuses to name.
MAX_STATUS_FILTERS = 5

# Which status may follow which. DELIVERED and CANCELLED are final.
TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    OrderStatus.PENDING: frozenset({OrderStatus.PAID, OrderStatus.CANCELLED}),
    OrderStatus.PAID: frozenset({OrderStatus.SHIPPED, OrderStatus.CANCELLED}),
    OrderStatus.SHIPPED: frozenset({OrderStatus.DELIVERED}),
    OrderStatus.DELIVERED: frozenset(),
    OrderStatus.CANCELLED: frozenset(),
}

# Operation name of the idempotency keys of CreateOrder; stored, so never rename it.
CREATE_ORDER = "orders.CreateOrder"


@dataclass(frozen=True)
class NewLineItem:
    sku: str
    name: str
    quantity: int
    unit_price_minor: int
    # The currency the caller gave with the price; None when the price came without
    # one (the deprecated unit_price_minor).
    unit_price_currency: str | None = None


@dataclass(frozen=True)
class NewOrder:
    line_items: Sequence[NewLineItem]
    currency_code: str
    # 0 places a guest order.
    customer_id: int = 0
    contact_email: str = ""


@dataclass(frozen=True)
class OrderFilter:
    """ListOrders' filters; None, empty, 0 or False means "no filter". `status` is
    the deprecated single status: normalized_filter folds it into `statuses`."""

    status: OrderStatus | None = None
    customer_id: int = 0
    created_from: datetime | None = None
    created_before: datetime | None = None
    statuses: tuple[OrderStatus, ...] = ()
    guests_only: bool = False


@dataclass(frozen=True)
class StatusChange:
    """A request to move an order to `status`: PayOrder, ShipOrder, DeliverOrder or
    CancelOrder. An empty etag applies the change whatever the order's revision."""

    order_id: int
    status: OrderStatus
    etag: str = ""
    tracking_reference: str = ""
    cancel_reason: str = ""


NO_FILTER = OrderFilter()


@dataclass(frozen=True)
class OrderPage:
    orders: Sequence[OrderSnapshot]
    next_page_token: str


def order_number(order_id: int) -> str:
    return f"O-{order_id:06d}"


def check_order_id(order_id: int) -> None:
    if order_id <= 0:
        raise InvalidArgument.of("order_id", "must be a positive order id")


# -- placing an order --------------------------------------------------------------------


def validated_order(new: NewOrder) -> dict[str, Any]:
    """The order's normalized values, or INVALID_ARGUMENT naming every problem."""
    problems = Violations()
    if new.customer_id < 0:
        problems.add("customer_id", "must be a positive customer id, or 0 for a guest order")
    currency_code = new.currency_code.strip().upper()
    if not is_currency(currency_code):
        problems.add("currency_code", 'must be an ISO 4217 currency code such as "EUR"')
    contact_email = new.contact_email.strip()
    if contact_email:
        contact_email = validation.email(problems, "contact_email", contact_email)
    if not new.line_items:
        problems.add("line_items", "must have at least one line")
    elif len(new.line_items) > MAX_LINE_ITEMS:
        problems.add("line_items", f"must have at most {MAX_LINE_ITEMS} lines")
    lines = [
        _validated_line(problems, f"line_items[{index}].", line, currency_code)
        for index, line in enumerate(new.line_items[:MAX_LINE_ITEMS])
    ]
    if not problems.items and order_total(lines) > MAX_AMOUNT_MINOR:
        problems.add("line_items", f"the order total must be at most {MAX_AMOUNT_MINOR}")
    problems.raise_if_any()
    return {
        "customer_id": new.customer_id,
        "currency_code": currency_code,
        "contact_email": contact_email,
        "line_items": lines,
    }


def numbered_lines(lines: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The order's lines as stored: numbered from 1, each with its total."""
    return [
        line | {"line_number": number, "line_total_minor": line_total(line)}
        for number, line in enumerate(lines, start=1)
    ]


def _validated_line(
    problems: Violations, prefix: str, line: NewLineItem, currency_code: str
) -> dict[str, Any]:
    """The line's stored values. The price is the same value whichever field carried
    it, so a retry that moves it from unit_price_minor to unit_price is the same
    request (the idempotency fingerprint hashes these values)."""
    sku = validation.text(problems, prefix + "sku", line.sku, max_length=SKU_MAX, required=True)
    name = validation.text(
        problems, prefix + "name", line.name, max_length=ITEM_NAME_MAX, required=True
    )
    if not 0 < line.quantity <= MAX_QUANTITY:
        problems.add(prefix + "quantity", f"must be from 1 to {MAX_QUANTITY}")
    price_field = prefix + "unit_price_minor"
    if line.unit_price_currency is not None:
        price_field = prefix + "unit_price.amount_minor"
        given = line.unit_price_currency.strip().upper()
        if given and given != currency_code:
            problems.add(
                prefix + "unit_price.currency_code",
                "must be empty or the order's currency_code",
            )
    if not 0 <= line.unit_price_minor <= MAX_AMOUNT_MINOR:
        problems.add(price_field, f"must be from 0 to {MAX_AMOUNT_MINOR}")
    return {
        "sku": sku,
        "name": name,
        "quantity": line.quantity,
        "unit_price_minor": line.unit_price_minor,
    }


def line_total(line: dict[str, Any]) -> int:
    return int(line["quantity"] * line["unit_price_minor"])


def order_total(lines: Sequence[dict[str, Any]]) -> int:
    return sum(line_total(line) for line in lines)


def is_currency(code: str) -> bool:
    """An ISO 4217 code of money with a minor unit: not XXX (no currency), XAU (gold)
    and the like, whose amounts have no minor unit to count in."""
    try:
        return Currency(code).exponent is not None
    except ValueError:
        return False


# -- the status machine --------------------------------------------------------------------


def sources_of(status: OrderStatus) -> list[OrderStatus]:
    """The statuses an order may have to become `status`."""
    return [source for source, targets in TRANSITIONS.items() if status in targets]


def invalid_transition(current: OrderStatus, requested: OrderStatus) -> FailedPrecondition:
    allowed = sorted(target.name for target in TRANSITIONS[current])
    return FailedPrecondition(
        f"an order that is {current.name} cannot become {requested.name}; "
        f"allowed: {', '.join(allowed) or 'none (final status)'}",
        reason="INVALID_STATUS_TRANSITION",
        metadata={"current_status": current.name, "requested_status": requested.name},
    )


def validated_change(change: StatusChange) -> dict[str, Any]:
    """A status change's normalized values (what its request_id's fingerprint
    hashes), or INVALID_ARGUMENT naming every problem."""
    problems = Violations()
    if change.order_id <= 0:
        problems.add("order_id", "must be a positive order id")
    tracking_reference = validation.text(
        problems, "tracking_reference", change.tracking_reference, max_length=TRACKING_REFERENCE_MAX
    )
    cancel_reason = change.cancel_reason
    if change.status is OrderStatus.CANCELLED:
        cancel_reason = validation.text(
            problems, "reason", change.cancel_reason, max_length=CANCEL_REASON_MAX, required=True
        )
    problems.raise_if_any()
    return {
        "order_id": change.order_id,
        "status": change.status.value,
        "etag": change.etag,
        "tracking_reference": tracking_reference,
        "cancel_reason": cancel_reason,
    }


# -- pages of orders, newest first -----------------------------------------------------------


def normalized_filter(filters: OrderFilter) -> OrderFilter:
    """The filters as one query shape: the deprecated `status` folded into a sorted,
    duplicate-free `statuses`; INVALID_ARGUMENT for filters that contradict."""
    check_filter(filters)
    problems = Violations()
    if filters.status is not None and filters.statuses:
        problems.add("status", "must not be set with statuses: use statuses alone")
    if len(filters.statuses) > MAX_STATUS_FILTERS:
        problems.add("statuses", f"must name at most {MAX_STATUS_FILTERS} statuses")
    if filters.guests_only and filters.customer_id:
        problems.add("guests_only", "must not be set with customer_id")
    problems.raise_if_any()
    given = filters.statuses if filters.status is None else (filters.status,)
    order = list(OrderStatus)
    statuses = tuple(sorted(set(given), key=order.index))
    return replace(filters, status=None, statuses=statuses)


def check_filter(filters: OrderFilter) -> None:
    if filters.customer_id < 0:
        raise InvalidArgument.of("customer_id", "must be a positive customer id, or 0")
    if (
        filters.created_from is not None
        and filters.created_before is not None
        and filters.created_before <= filters.created_from
    ):
        raise InvalidArgument.of("create_time_end", "must be later than create_time_start")


@dataclass(frozen=True)
class PageRequest:
    """A page to read: up to `size` orders older than `after` (created_at, order_id),
    or the newest ones without it."""

    scope: dict[str, Any]
    size: int
    after: tuple[datetime, int] | None = None


def page_request(
    page_tokens: PageTokenCodec, scope: dict[str, Any], page_size: int, page_token: str
) -> PageRequest:
    """The page a List call asks for; INVALID_ARGUMENT for a bad size or token."""
    size = resolve_page_size(page_size, default=DEFAULT_PAGE_SIZE, maximum=MAX_PAGE_SIZE)
    if not page_token:
        return PageRequest(scope, size)
    created_at, order_id = page_tokens.decode(page_token, scope)
    return PageRequest(scope, size, (datetime.fromisoformat(created_at), order_id))


def cut_page(
    page_tokens: PageTokenCodec, request: PageRequest, orders: list[OrderSnapshot]
) -> OrderPage:
    """The page from the orders read for it (one more than its size, when there are)."""
    page, token = page_tokens.cut(
        orders,
        request.size,
        request.scope,
        lambda last: [last.created_at.isoformat(), last.order_id],
    )
    return OrderPage(page, token)


# -- statistics ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CurrencyTotals:
    currency_code: str
    order_count: int
    total_spent_minor: int

    @property
    def avg_order_value_minor(self) -> int:
        """The mean order total, rounded half away from zero (totals are never
        negative, so: half up), in exact integer arithmetic."""
        return (2 * self.total_spent_minor + self.order_count) // (2 * self.order_count)


@dataclass(frozen=True)
class CustomerOrderStats:
    """A customer's order statistics; cancelled orders count in none of them."""

    store_id: int
    customer_id: int
    # One entry per currency, sorted by currency code; empty without orders.
    currencies: list[CurrencyTotals] = field(default_factory=list)
    first_order_time: datetime | None = None
    last_order_time: datetime | None = None

    @property
    def total_orders(self) -> int:
        return sum(totals.order_count for totals in self.currencies)


def counted(status: OrderStatus) -> bool:
    """Whether an order of `status` counts in its customer's statistics."""
    return status is not OrderStatus.CANCELLED


def statistics_change(old: OrderStatus, new: OrderStatus) -> int:
    """What a status change does to its customer's statistics: 1 when the order
    starts counting, -1 when it stops, 0 when neither (every change but into
    CANCELLED today; the status machine lets no order leave it, but should one,
    it counts again)."""
    return int(counted(new)) - int(counted(old))


def stats_of(
    store_id: int, customer_id: int, per_currency: Sequence[Mapping[str, Any]]
) -> CustomerOrderStats:
    """The statistics from the database's per-currency aggregates (currency_code,
    order_count, total_minor, first_time, last_time); a row without a currency stands
    for a customer without orders."""
    counted = [row for row in per_currency if row["currency_code"] is not None]
    return CustomerOrderStats(
        store_id=store_id,
        customer_id=customer_id,
        # PostgreSQL's sum(bigint) is numeric (the kept slots' counts are summed too):
        # back to int, exactly.
        currencies=[
            CurrencyTotals(row["currency_code"], int(row["order_count"]), int(row["total_minor"]))
            for row in counted
        ],
        first_order_time=min((row["first_time"] for row in counted), default=None),
        last_order_time=max((row["last_time"] for row in counted), default=None),
    )


@dataclass(frozen=True)
class KeptTotals:
    """One customer's statistics in one currency: as kept, or as the orders say."""

    order_count: int
    total_minor: int
    first_order_at: datetime
    last_order_at: datetime

    def __str__(self) -> str:
        return (
            f"{self.order_count} orders, total {self.total_minor}, "
            f"first {self.first_order_at.isoformat()}, last {self.last_order_at.isoformat()}"
        )


@dataclass(frozen=True)
class StatisticsDrift:
    """A customer's kept statistics in a currency that differ from their orders'
    (None: no row, or no counted order)."""

    store_id: int
    customer_id: int
    currency_code: str
    slot: int
    expected: KeptTotals | None
    kept: KeptTotals | None

    def __str__(self) -> str:
        return (
            f"store {self.store_id} customer {self.customer_id} {self.currency_code}"
            f" (slot {self.slot}): "
            f"expected {self.expected or 'none'}; kept {self.kept or 'none'}"
        )


def drifts_of(
    store_id: int,
    expected: Mapping[tuple[int, str, int], KeptTotals],
    kept: Mapping[tuple[int, str, int], KeptTotals],
) -> list[StatisticsDrift]:
    """Where the kept statistics differ from the expected ones, by customer, currency
    and slot."""
    return [
        StatisticsDrift(store_id, *key, expected.get(key), kept.get(key))
        for key in sorted(expected.keys() | kept.keys())
        if expected.get(key) != kept.get(key)
    ]
