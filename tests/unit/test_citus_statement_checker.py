"""The statement check of tests/e2e/test_citus_statements.py on statements written to
be right or wrong: what pins a distributed table to one store, and what does not."""

from __future__ import annotations

import pytest

from tests.citus import statement_key, statement_problems

DISTRIBUTED = {"customers", "orders", "customer_tags"}

ONE_SHARD = [
    "SELECT c.email FROM customers AS c WHERE c.store_id = $1 AND c.customer_id = $2",
    "SELECT email FROM customers WHERE store_id = $1::BIGINT",
    "UPDATE orders SET status = $1 WHERE orders.store_id = $2 AND orders.order_id = $3",
    "DELETE FROM orders WHERE orders.store_id = $1 AND orders.created_at < $2",
    "INSERT INTO orders (store_id, order_id) VALUES ($1::BIGINT, $2)",
    # A colocated join on store_id, the store given once.
    "SELECT o.total FROM orders AS o JOIN customers AS c "
    "ON c.store_id = o.store_id AND c.customer_id = o.customer_id WHERE o.store_id = $1",
    # LATERAL probes, each pinned by the same value.
    "SELECT found.* FROM unnest($2::BIGINT[]) AS wanted(id) JOIN LATERAL "
    "(SELECT * FROM customers WHERE customers.store_id = $1 "
    "AND customers.customer_id = wanted.id OFFSET 0) AS found ON true",
    # A data-modifying CTE feeding an INSERT ... SELECT, one store throughout.
    "WITH n AS (INSERT INTO customer_tags (store_id, tag, customer_id) VALUES ($1, $2, $3) "
    "RETURNING customer_id) INSERT INTO orders (store_id, customer_id) "
    "SELECT $1::BIGINT AS anon_1, n.customer_id FROM n",
    # Tables of no store (reference, local, catalogs) are not checked.
    "SELECT stores.is_active FROM stores WHERE stores.id = $1",
    "BEGIN ISOLATION LEVEL REPEATABLE READ",
]

MULTI_SHARD = [
    ("SELECT email FROM customers WHERE customer_id = $1", "customers not pinned"),
    ("SELECT email FROM customers WHERE store_id = $1 OR customer_id = $2", "not pinned"),
    ("SELECT email FROM customers WHERE store_id = ANY($1::BIGINT[])", "not pinned"),
    ("SELECT email FROM customers WHERE store_id > $1", "not pinned"),
    ("DELETE FROM orders WHERE created_at < $1", "orders not pinned"),
    ("INSERT INTO orders (order_id) VALUES ($1)", "without store_id"),
    ("INSERT INTO orders (store_id) SELECT store_id FROM customers", "not one given value"),
    # A join that is not on store_id leaves the second table free.
    (
        "SELECT o.total FROM orders AS o JOIN customers AS c ON c.customer_id = o.customer_id "
        "WHERE o.store_id = $1",
        "customers not pinned",
    ),
    # Each table on one shard, but two stores.
    (
        "SELECT o.total FROM orders AS o, customers AS c WHERE o.store_id = $1 AND c.store_id = $2",
        "more than one value",
    ),
    # A subquery is a scope of its own: the outer pin does not reach it.
    (
        "SELECT c.email FROM customers AS c WHERE c.store_id = $1 AND c.customer_id IN "
        "(SELECT customer_id FROM customer_tags WHERE tag = $2)",
        "customer_tags not pinned",
    ),
]


@pytest.mark.parametrize("sql", ONE_SHARD)
def test_a_statement_pinned_to_one_store_passes(sql: str) -> None:
    assert statement_problems(sql, DISTRIBUTED) == []


@pytest.mark.parametrize(("sql", "problem"), MULTI_SHARD)
def test_a_statement_not_pinned_to_one_store_is_found(sql: str, problem: str) -> None:
    problems = statement_problems(sql, DISTRIBUTED)
    assert any(problem in found for found in problems), problems


def test_a_statement_that_cannot_be_parsed_is_reported() -> None:
    assert statement_problems("SELECT FROM customers WHERE (", DISTRIBUTED)


def test_the_key_ignores_layout_but_not_content() -> None:
    sql = "SELECT email\nFROM customers\nWHERE store_id = $1"
    assert statement_key(sql) == statement_key(" ".join(sql.split()))
    assert statement_key(sql) != statement_key(sql.replace("$1", "$2"))
