"""Field rules of customers and addresses. Each check reports into a Violations
collector, so one request learns all of its problems at once."""

from __future__ import annotations

import re

import email_validator
import iso3166
import langcodes

from services.core.domain.errors import Violations

EMAIL_MAX = 255
NAME_MAX = 100
PHONE_MAX = 50
LINE_MAX = 255
POSTAL_CODE_MAX = 20
QUERY_MAX = 255

_PHONE = re.compile(r"^\+?[0-9 ().\-]*[0-9][0-9 ().\-]*$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def email(problems: Violations, field: str, value: str) -> str:
    """The normalized email (domain lower-cased), or `value` after reporting why not."""
    if not value:
        problems.add(field, "is required")
        return value
    if len(value) > EMAIL_MAX:
        problems.add(field, f"must be at most {EMAIL_MAX} characters")
        return value
    try:
        return email_validator.validate_email(value, check_deliverability=False).normalized
    except email_validator.EmailNotValidError as error:
        problems.add(field, f"is not a valid email address: {error}")
        return value


def text(
    problems: Violations, field: str, value: str, *, max_length: int, required: bool = False
) -> str:
    """Single-line text with surrounding whitespace removed."""
    value = value.strip()
    if required and not value:
        problems.add(field, "is required")
    elif len(value) > max_length:
        problems.add(field, f"must be at most {max_length} characters")
    elif has_control_characters(value):
        problems.add(field, "must not contain control characters")
    return value


def search_text(problems: Violations, field: str, value: str) -> str:
    """A search needle: lower-cased, at most QUERY_MAX characters, no control characters."""
    value = value.strip().lower()
    if len(value) > QUERY_MAX:
        problems.add(field, f"must be at most {QUERY_MAX} characters")
    elif has_control_characters(value):
        problems.add(field, "must not contain control characters")
    return value


def has_control_characters(value: str) -> bool:
    return _CONTROL.search(value) is not None


def phone(problems: Violations, field: str, value: str) -> str:
    value = value.strip()
    if value and (len(value) > PHONE_MAX or not _PHONE.match(value)):
        problems.add(
            field, f"must be at most {PHONE_MAX} characters of digits, spaces and + ( ) - ."
        )
    return value


def language_tag(problems: Violations, field: str, value: str) -> str:
    """A BCP 47 tag in its canonical form ("pt-br" becomes "pt-BR"); empty is allowed."""
    if not value:
        return value
    if len(value) > 35 or not langcodes.tag_is_valid(value):
        problems.add(field, 'must be a BCP 47 language tag such as "en" or "pt-BR"')
        return value
    return langcodes.standardize_tag(value)


def country_code(problems: Violations, field: str, value: str) -> str:
    value = value.strip().upper()
    if value not in iso3166.countries_by_alpha2:
        problems.add(field, 'must be an ISO 3166-1 alpha-2 country code such as "DE"')
    return value
