"""The rules of customer tags (services.customers.rules): normalising, refusing,
deduplicating, the erased customer. No database, no server."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.core.domain.errors import FailedPrecondition, InvalidArgument, Violations
from services.customers.models import MAX_TAG_LENGTH, MAX_TAGS, CustomerSnapshot
from services.customers.rules import (
    check_not_erased,
    customer_values,
    filter_tag,
    joined_tags,
    normalized_tag,
    tag_set,
    valid_tags,
)

NOW = datetime(2026, 11, 29, tzinfo=UTC)


def normal(value: str) -> str:
    problems = Violations()
    tag = normalized_tag(problems, "tags[0]", value)
    problems.raise_if_any()
    return tag


def refusal(values: list[str]) -> dict[str, str]:
    with pytest.raises(InvalidArgument) as refused:
        valid_tags("tags", values)
    return {violation.field: violation.description for violation in refused.value.violations}


@pytest.mark.parametrize(
    ("given_tag", "stored"),
    [
        ("VIP", "vip"),
        ("  Big   Spender\u00a0 ", "big spender"),  # no-break space is white space too
        ("\uff37\uff48\uff4f\uff4c\uff45\uff53\uff41\uff4c\uff45", "wholesale"),  # full-width
        ("ﬁrst order", "first order"),  # NFKC: the ligature
        ("Straße", "strasse"),  # case folding, not just lower case
        ("e\u0301te", "\u00e9te"),  # combining accent composed
        ("né 2026", "né 2026"),
    ],
)
def test_tags_are_normalised(given_tag, stored):
    assert normal(given_tag) == stored


def test_equal_tags_after_normalising_are_one_and_sorted():
    assert valid_tags("tags", ["b", "A", " a ", "STRASSE", "Straße"]) == ["a", "b", "strasse"]


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        ("", "must not be empty"),
        ("   ", "must not be empty"),
        ("a,b", "must not contain commas"),
        ("a\uff0cb", "must not contain commas"),  # a full-width comma is a comma after NFKC
        ("tab\there", "must not contain control characters"),
        ("line\nbreak", "must not contain control characters"),
        ("c1\u0085", "must not contain control characters"),
        ("x" * (MAX_TAG_LENGTH + 1), f"must be at most {MAX_TAG_LENGTH} characters"),
        ("x" * 10_000, f"must be at most {MAX_TAG_LENGTH} characters"),
        ("\ufdfa" * 4, f"must be at most {MAX_TAG_LENGTH} characters"),  # NFKC expands it
    ],
)
def test_a_bad_tag_is_named_by_its_index(bad, why):
    assert refusal(["fine", bad]) == {"tags[1]": why}


def test_the_longest_tag_is_allowed():
    assert valid_tags("tags", ["x" * MAX_TAG_LENGTH]) == ["x" * MAX_TAG_LENGTH]


def test_every_bad_tag_is_named_at_once():
    assert set(refusal(["", "ok", "a,b"])) == {"tags[0]", "tags[2]"}


def test_a_request_names_at_least_one_and_at_most_max_tags():
    assert refusal([]) == {"tags": "must hold at least one tag"}
    assert refusal([f"t{i}" for i in range(MAX_TAGS + 1)]) == {
        "tags": f"must hold at most {MAX_TAGS} tags"
    }
    assert len(valid_tags("tags", [f"t{i}" for i in range(MAX_TAGS)])) == MAX_TAGS


def test_update_and_create_values_hold_the_joined_tags():
    problems = Violations(prefix="customer.")
    assert customer_values(problems, [("tags", ["b", "A", "a"])]) == {"tags": "a,b"}
    assert customer_values(problems, [("tags", [])]) == {"tags": ""}
    customer_values(problems, [("tags", ["ok", "x,y"])])
    assert [v.field for v in problems.items] == ["customer.tags[1]"]


def test_a_filter_tag_is_normalised_and_may_be_empty():
    problems = Violations()
    assert filter_tag(problems, "tag", " VIP ") == "vip"
    assert filter_tag(problems, "tag", "") == ""
    filter_tag(problems, "tag", "a,b")
    assert [v.field for v in problems.items] == ["tag"]


@given(st.lists(st.text(max_size=20), max_size=MAX_TAGS))
def test_normalising_is_idempotent_and_never_lets_a_comma_through(values):
    problems = Violations()
    tags = tag_set(problems, "tags", values)
    assert tags == sorted(set(tags))
    assert all(tag and "," not in tag and len(tag) <= MAX_TAG_LENGTH for tag in tags)
    # What is stored normalises to itself, so a stored tag always finds itself.
    again = Violations()
    assert tag_set(again, "tags", tags) == tags
    assert again.items == []
    assert joined_tags(tags).split(",") == tags or tags == []


def _customer(erased_at: datetime | None) -> CustomerSnapshot:
    return CustomerSnapshot(
        store_id=1,
        customer_id=7,
        customer_number="C-000007",
        email="a@example.com",
        email_key="a@example.com",
        hashed_password=None,
        first_name="",
        last_name="",
        phone="",
        marketing_consent=False,
        preferred_language="",
        is_active=True,
        revision=1,
        created_at=NOW,
        updated_at=NOW,
        erased_at=erased_at,
        tags="",
    )


def test_an_erased_customer_is_refused():
    check_not_erased(_customer(None))
    with pytest.raises(FailedPrecondition) as refused:
        check_not_erased(replace(_customer(None), erased_at=NOW))
    assert refused.value.reason == "CUSTOMER_ERASED"
    assert refused.value.metadata == {"customer_id": "7"}
