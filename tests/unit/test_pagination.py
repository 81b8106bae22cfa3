from __future__ import annotations

import pytest

from services.core.domain.errors import InvalidArgument
from services.core.domain.pagination import PageTokenCodec, resolve_page_size

QUERY = {"list": "customers", "store_id": 1, "active": None, "query": ""}


def test_a_token_round_trips_its_position():
    codec = PageTokenCodec("k")
    assert codec.decode(codec.encode(QUERY, [42]), QUERY) == [42]


def test_a_token_is_url_safe_and_opaque():
    token = PageTokenCodec("k").encode(QUERY, [42])
    assert token.replace("-", "").replace("_", "").isalnum()
    assert "customers" not in token


@pytest.mark.parametrize(
    "other",
    [
        QUERY | {"store_id": 2},
        QUERY | {"active": True},
        QUERY | {"query": "x"},
        QUERY | {"list": "orders"},
    ],
)
def test_a_token_is_bound_to_its_query(other):
    codec = PageTokenCodec("k")
    with pytest.raises(InvalidArgument, match="page_token"):
        codec.decode(codec.encode(QUERY, [42]), other)


def test_a_token_signed_with_another_key_is_refused():
    with pytest.raises(InvalidArgument):
        PageTokenCodec("other").decode(PageTokenCodec("k").encode(QUERY, [42]), QUERY)


@pytest.mark.parametrize("token", ["", "A", "!!!!", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "é"])
def test_garbage_is_refused(token):
    with pytest.raises(InvalidArgument):
        PageTokenCodec("k").decode(token, QUERY)


def test_without_a_secret_each_codec_has_its_own_key():
    token = PageTokenCodec("").encode(QUERY, [1])
    with pytest.raises(InvalidArgument):
        PageTokenCodec("").decode(token, QUERY)


@pytest.mark.parametrize(
    ("asked", "given"), [(0, 50), (1, 1), (500, 500), (501, 500), (2**31 - 1, 500)]
)
def test_page_size_rules(asked, given):
    assert resolve_page_size(asked, default=50, maximum=500) == given


def test_negative_page_size_is_invalid():
    with pytest.raises(InvalidArgument) as raised:
        resolve_page_size(-1, default=50, maximum=500)
    assert raised.value.violations[0].field == "page_size"


@pytest.mark.parametrize(
    ("fetched", "page", "has_next"),
    [(2, 2, False), (3, 3, False), (4, 3, True)],  # page size 3, fetched with LIMIT 4
)
def test_cut_keeps_a_page_and_tokens_only_a_real_next_page(fetched, page, has_next):
    codec = PageTokenCodec("secret")
    query = {"list": "things"}
    rows, token = codec.cut(list(range(1, fetched + 1)), 3, query, lambda last: [last])
    assert rows == list(range(1, page + 1))
    assert bool(token) is has_next
    if has_next:
        assert codec.decode(token, query) == [3]
