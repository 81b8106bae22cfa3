"""The orders module's pure rules (services.orders.rules): no database, no server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.core.domain.errors import InvalidArgument
from services.core.domain.etags import etag, revision_named
from services.core.domain.pagination import PageTokenCodec
from services.orders.models import OrderSnapshot, OrderStatus
from services.orders.rules import (
    MAX_AMOUNT_MINOR,
    MAX_LINE_ITEMS,
    TRANSITIONS,
    CurrencyTotals,
    CustomerOrderStats,
    NewLineItem,
    NewOrder,
    OrderFilter,
    check_filter,
    cut_page,
    invalid_transition,
    is_currency,
    normalized_filter,
    numbered_lines,
    order_number,
    order_total,
    page_request,
    sources_of,
    stats_of,
    validated_order,
)

ITEM = NewLineItem(sku="SKU-1", name="Mug", quantity=2, unit_price_minor=1250)


def fields_of(error: InvalidArgument) -> list[str]:
    return [violation.field for violation in error.violations]


def test_an_order_is_normalised():
    values = validated_order(
        NewOrder([ITEM], currency_code=" eur ", contact_email=" Ann@Example.COM ")
    )
    assert values["currency_code"] == "EUR"
    assert values["contact_email"] == "Ann@example.com"
    assert values["line_items"] == [
        {"sku": "SKU-1", "name": "Mug", "quantity": 2, "unit_price_minor": 1250}
    ]


def test_every_problem_of_an_order_is_named_at_once():
    bad_line = NewLineItem(sku=" ", name="x" * 201, quantity=0, unit_price_minor=-1)
    with pytest.raises(InvalidArgument) as raised:
        validated_order(
            NewOrder([ITEM, bad_line], currency_code="XXX", customer_id=-1, contact_email="no")
        )
    assert fields_of(raised.value) == [
        "customer_id",
        "currency_code",
        "contact_email",
        "line_items[1].sku",
        "line_items[1].name",
        "line_items[1].quantity",
        "line_items[1].unit_price_minor",
    ]


@pytest.mark.parametrize(
    "lines",
    [[], [ITEM] * (MAX_LINE_ITEMS + 1)],
    ids=["none", "too many"],
)
def test_an_order_has_from_one_to_the_maximum_of_lines(lines):
    with pytest.raises(InvalidArgument) as raised:
        validated_order(NewOrder(lines, currency_code="EUR"))
    assert fields_of(raised.value) == ["line_items"]


def test_the_total_of_an_order_is_bounded_though_each_line_is_not():
    line = NewLineItem(sku="a", name="a", quantity=100_000, unit_price_minor=MAX_AMOUNT_MINOR)
    with pytest.raises(InvalidArgument) as raised:
        validated_order(NewOrder([line], currency_code="EUR"))
    assert fields_of(raised.value) == ["line_items"]


def test_lines_are_numbered_from_one_and_totalled():
    lines = numbered_lines(
        [{"quantity": 2, "unit_price_minor": 250}, {"quantity": 3, "unit_price_minor": 100}]
    )
    assert [(line["line_number"], line["line_total_minor"]) for line in lines] == [
        (1, 500),
        (2, 300),
    ]
    assert order_total(lines) == 800


@pytest.mark.parametrize(
    ("code", "known"), [("EUR", True), ("JPY", True), ("XXX", False), ("XAU", False), ("EU", False)]
)
def test_only_money_with_a_minor_unit_is_a_currency(code, known):
    assert is_currency(code) is known


def test_order_numbers_are_padded():
    assert order_number(42) == "O-000042"
    assert order_number(12_345_678) == "O-12345678"


def test_final_statuses_have_no_way_out_and_every_status_but_pending_has_a_way_in():
    assert TRANSITIONS[OrderStatus.DELIVERED] == TRANSITIONS[OrderStatus.CANCELLED] == frozenset()
    assert sources_of(OrderStatus.PENDING) == []
    assert sorted(sources_of(OrderStatus.CANCELLED)) == [OrderStatus.PAID, OrderStatus.PENDING]
    assert sources_of(OrderStatus.DELIVERED) == [OrderStatus.SHIPPED]


def test_an_invalid_transition_says_what_is_allowed():
    error = invalid_transition(OrderStatus.PENDING, OrderStatus.SHIPPED)
    assert error.reason == "INVALID_STATUS_TRANSITION"
    assert "allowed: CANCELLED, PAID" in error.message
    final = invalid_transition(OrderStatus.DELIVERED, OrderStatus.PAID)
    assert "none (final status)" in final.message


def test_a_filter_needs_a_time_range_that_is_not_empty():
    now = datetime.now(UTC)
    check_filter(OrderFilter(created_from=now, created_before=now + timedelta(seconds=1)))
    with pytest.raises(InvalidArgument):
        check_filter(OrderFilter(created_from=now, created_before=now))
    with pytest.raises(InvalidArgument):
        check_filter(OrderFilter(customer_id=-1))


def order(order_id: int, created_at: datetime) -> OrderSnapshot:
    return OrderSnapshot(
        1,
        order_id,
        order_number(order_id),
        None,
        "PENDING",
        "EUR",
        0,
        "",
        created_at,
        created_at,
        1,
        "",
        "",
    )


def test_a_page_continues_after_its_last_order():
    codec = PageTokenCodec("secret")
    now = datetime.now(UTC)
    scope = {"list": "orders", "store_id": 1}
    first = page_request(codec, scope, 2, "")
    assert (first.size, first.after) == (2, None)
    read = [order(9, now), order(8, now), order(7, now)]  # one more than the page
    page = cut_page(codec, first, read)
    assert [o.order_id for o in page.orders] == [9, 8]
    following = page_request(codec, scope, 2, page.next_page_token)
    assert following.after == (now, 8)
    assert cut_page(codec, following, [order(7, now)]).next_page_token == ""
    with pytest.raises(InvalidArgument):  # a token of another store's listing
        page_request(codec, scope | {"store_id": 2}, 2, page.next_page_token)


def test_the_average_order_value_rounds_half_up_exactly():
    assert CurrencyTotals("EUR", 2, 3).avg_order_value_minor == 2
    assert CurrencyTotals("EUR", 3, 4).avg_order_value_minor == 1
    big = 10**12 * 3 + 1
    assert CurrencyTotals("EUR", 3, big).avg_order_value_minor == 10**12
    stats = CustomerOrderStats(1, 1, [CurrencyTotals("EUR", 2, 3), CurrencyTotals("USD", 5, 9)])
    assert stats.total_orders == 7


def test_statistics_count_each_currency_and_span_all_of_them():
    early, late = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 6, 1, tzinfo=UTC)
    rows = [
        {
            "currency_code": "EUR",
            "order_count": 2,
            "total_minor": 3,
            "first_time": late,
            "last_time": late,
        },
        {
            "currency_code": "USD",
            "order_count": 1,
            "total_minor": 7,
            "first_time": early,
            "last_time": early,
        },
    ]
    stats = stats_of(1, 5, rows)
    assert [(t.currency_code, t.total_spent_minor) for t in stats.currencies] == [
        ("EUR", 3),
        ("USD", 7),
    ]
    assert (stats.first_order_time, stats.last_order_time, stats.total_orders) == (early, late, 3)
    # The customer exists but has no counted orders: one row without a currency.
    empty = stats_of(
        1,
        5,
        [
            {
                "currency_code": None,
                "order_count": 0,
                "total_minor": None,
                "first_time": None,
                "last_time": None,
            }
        ],
    )
    assert (empty.currencies, empty.first_order_time, empty.total_orders) == ([], None, 0)


def test_only_an_etag_this_server_issues_names_a_revision() -> None:
    assert revision_named("") is None
    assert revision_named(etag(42)) == 42
    for foreign in ("42", "r", "r-1", "r042", "R42", "r4 2", "r\u0661", "r" + "9" * 10):
        assert revision_named(foreign) == 0, foreign


def test_the_deprecated_status_folds_into_statuses() -> None:
    folded = normalized_filter(OrderFilter(status=OrderStatus.PAID))
    assert (folded.status, folded.statuses) == (None, (OrderStatus.PAID,))
    several = normalized_filter(
        OrderFilter(statuses=(OrderStatus.CANCELLED, OrderStatus.PENDING, OrderStatus.CANCELLED))
    )
    assert several.statuses == (OrderStatus.PENDING, OrderStatus.CANCELLED)
    for contradicting in (
        OrderFilter(status=OrderStatus.PAID, statuses=(OrderStatus.PAID,)),
        OrderFilter(guests_only=True, customer_id=3),
        OrderFilter(statuses=(OrderStatus.PAID,) * 6),
    ):
        with pytest.raises(InvalidArgument):
            normalized_filter(contradicting)
