"""The customers module's pure rules (services.customers.rules): no database, no server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.core.domain.errors import Aborted, InvalidArgument, Violations
from services.core.domain.etags import check_etag, etag
from services.customers.models import ThrottleSnapshot
from services.customers.rules import (
    MAX_BATCH_CUSTOMERS,
    LoginPolicy,
    address_values,
    caller_subject,
    check_batch_customer_ids,
    check_customer_id,
    contains_pattern,
    customer_number,
    customer_values,
    email_key,
    email_subject,
    first_missing,
    login_key,
)


def test_an_email_brings_its_case_blind_key():
    problems = Violations()
    values = customer_values(problems, [("email", "Ann.Lee@Example.COM")])
    problems.raise_if_any()
    assert values == {"email": "Ann.Lee@example.com", "email_key": "ann.lee@example.com"}
    assert email_key("A@B.C") == "a@b.c"


def test_a_login_key_is_what_the_email_would_be_stored_under():
    assert login_key(" Ann.Lee@Example.COM ") == "ann.lee@example.com"
    assert login_key("not an email") is None


def test_customer_values_are_normalised_and_every_problem_named():
    problems = Violations()
    values = customer_values(
        problems,
        [
            ("first_name", "  Ann "),
            ("preferred_language", "pt-br"),
            ("phone", "+49 (30) 1234-56"),
            ("marketing_consent", 1),
        ],
    )
    problems.raise_if_any()
    assert values == {
        "first_name": "Ann",
        "preferred_language": "pt-BR",
        "phone": "+49 (30) 1234-56",
        "marketing_consent": True,
    }
    problems = Violations()
    customer_values(
        problems,
        [
            ("email", "nope"),
            ("last_name", "a\x00b"),
            ("phone", "call me"),
            ("preferred_language", "??"),
        ],
    )
    with pytest.raises(InvalidArgument) as raised:
        problems.raise_if_any()
    assert [v.field for v in raised.value.violations] == [
        "email",
        "last_name",
        "phone",
        "preferred_language",
    ]


def test_an_unknown_field_is_a_programming_error_not_a_callers():
    with pytest.raises(ValueError, match="not a customer field"):
        customer_values(Violations(), [("hashed_password", "x")])
    with pytest.raises(ValueError, match="not an address field"):
        address_values(Violations(), [("customer_id", 1)])


def test_an_address_needs_its_required_fields_and_a_real_country():
    problems = Violations()
    values = address_values(
        problems,
        [
            ("recipient_name", " "),
            ("address_line1", "Main St 1"),
            ("city", "Berlin"),
            ("country_code", "de"),
        ],
    )
    assert values["country_code"] == "DE"
    with pytest.raises(InvalidArgument) as raised:
        problems.raise_if_any()
    assert [v.field for v in raised.value.violations] == ["recipient_name"]
    problems = Violations()
    address_values(problems, [("country_code", "XX")])
    with pytest.raises(InvalidArgument):
        problems.raise_if_any()


@pytest.mark.parametrize(
    ("needle", "pattern"),
    [("ann", "%ann%"), ("50%", "%50/%%"), ("a_b", "%a/_b%"), ("x/y", "%x//y%")],
)
def test_a_search_takes_its_own_wildcards_literally(needle, pattern):
    assert contains_pattern(needle) == pattern


def test_ids_numbers_and_etags():
    assert customer_number(7) == "C-000007"
    with pytest.raises(InvalidArgument):
        check_customer_id(0)


def test_a_batch_names_each_bad_id_by_its_position():
    check_batch_customer_ids([1] * MAX_BATCH_CUSTOMERS)
    for too_few_or_many in ([], [1] * (MAX_BATCH_CUSTOMERS + 1)):
        with pytest.raises(InvalidArgument) as raised:
            check_batch_customer_ids(too_few_or_many)
        assert [v.field for v in raised.value.violations] == ["customer_ids"]
    with pytest.raises(InvalidArgument) as raised:
        check_batch_customer_ids([3, 0, 5, -1])
    assert [v.field for v in raised.value.violations] == ["customer_ids[1]", "customer_ids[3]"]


def test_the_first_missing_id_is_first_in_request_order():
    assert first_missing([4, 9, 2, 12, 9], {4: "a"}) == 9
    assert first_missing([4, 4], {4: "a"}) is None


class Revised:
    def __init__(self, revision: int) -> None:
        self.revision = revision


def test_a_stale_etag_is_refused_and_an_empty_one_skips_the_check():
    customer = Revised(3)
    assert etag(customer.revision) == "r3"
    check_etag("customer", customer.revision, "")
    check_etag("customer", customer.revision, "r3")
    with pytest.raises(Aborted) as raised:
        check_etag("customer", customer.revision, "r2")
    assert raised.value.metadata == {"current_etag": "r3"}


# -- login throttling ------------------------------------------------------------------------

_NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
_EMAIL = email_subject("ann@example.com", login_key("ann@example.com"))
_CALLER = caller_subject("address:127.0.0.1")


def _throttle(subject: str, failures: int, minutes_ago: float) -> ThrottleSnapshot:
    return ThrottleSnapshot(subject, failures, _NOW - timedelta(minutes=minutes_ago))


@pytest.mark.parametrize(
    ("throttles", "wait"),
    [
        ([], None),
        ([_throttle(_EMAIL, 9, 1)], None),  # below the email's limit
        ([_throttle(_EMAIL, 10, 1)], timedelta(minutes=14)),  # at it: until the window ends
        ([_throttle(_EMAIL, 50, 15)], None),  # the window has passed
        ([_throttle(_CALLER, 10, 1)], None),  # the caller's limit is higher
        ([_throttle(_CALLER, 100, 5)], timedelta(minutes=10)),
        ([_throttle(_EMAIL, 10, 10), _throttle(_CALLER, 100, 1)], timedelta(minutes=14)),
    ],
)
def test_a_login_waits_for_the_longest_throttle_it_reached(throttles, wait):
    policy = LoginPolicy(per_email=10, per_caller=100, window=timedelta(minutes=15))
    assert policy.wait(_EMAIL, throttles, _NOW) == wait


def test_a_per_caller_limit_of_zero_never_throttles():
    policy = LoginPolicy(per_email=10, per_caller=0)
    assert policy.wait(_EMAIL, [_throttle(_CALLER, 10_000, 1)], _NOW) is None


def test_the_email_subject_ignores_case_and_keeps_emails_apart():
    def subject(email: str) -> str:
        return email_subject(email, login_key(email))

    assert subject(" ANN@example.com") == subject("ann@example.com")
    assert subject("bob@example.com") != subject("ann@example.com")
    assert subject("not an email") == subject("NOT AN EMAIL")
    assert subject("\ud800\x00") != subject("")  # hostile text hashes, never fails
    assert caller_subject("address:127.0.0.2") != _CALLER
