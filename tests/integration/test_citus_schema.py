"""The migrated schema fits Citus' sharding by store as docs/scaling.md describes it:
every table has a role there, and every primary key, unique constraint, unique index
and foreign key of a distributed table includes store_id (foreign keys into the
reference table `stores` excepted), but for the constraints the document lists as
known gaps, each with what must change. A companion test runs the same check on a
deliberately bad schema, to show that it fails."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from tests.citus import (
    ddl_calls,
    load_constraint_exceptions,
    load_table_roles,
    on_postgresql,
    read_schema,
    schema_problems,
)


@pytest.fixture
async def connection(database_url: str) -> AsyncIterator[Any]:
    dsn = make_url(database_url).set(drivername="postgresql")
    connection = await asyncpg.connect(dsn.render_as_string(hide_password=False))
    try:
        yield connection
    finally:
        await connection.close()


@on_postgresql
async def test_every_table_has_a_role_and_every_key_includes_store_id(connection: Any) -> None:
    schema = await read_schema(connection)
    problems = schema_problems(schema, load_table_roles(), load_constraint_exceptions())
    assert not problems, "see docs/scaling.md, Sharding by store with Citus:\n" + "\n".join(
        problems
    )


@on_postgresql
async def test_each_listed_gap_exists_and_is_still_a_gap(connection: Any) -> None:
    """A gap closed (or renamed) leaves no stale entry in the document."""
    schema = await read_schema(connection)
    roles = load_table_roles()
    for name in load_constraint_exceptions():
        others = load_constraint_exceptions() - {name}
        assert schema_problems(schema, roles, others), f"{name} is listed but fits Citus"


def test_the_documented_citus_calls_match_the_roles() -> None:
    roles = load_table_roles()
    assert ddl_calls() == {table: role for table, role in roles.items() if role != "local"}


# A schema with every kind of mistake the check is for, made inside a transaction
# that is rolled back: no other test sees it.
BAD_SCHEMA = """
CREATE TABLE citus_check_parents (
    store_id bigint NOT NULL,
    parent_id bigint NOT NULL,
    code text NOT NULL,
    CONSTRAINT citus_check_parents_pk PRIMARY KEY (parent_id),
    CONSTRAINT citus_check_parents_code UNIQUE (code)
);
CREATE UNIQUE INDEX citus_check_parents_lower_code ON citus_check_parents (lower(code));
CREATE TABLE citus_check_children (
    store_id bigint NOT NULL,
    child_id bigint NOT NULL,
    parent_id bigint NOT NULL,
    CONSTRAINT citus_check_children_pk PRIMARY KEY (store_id, child_id),
    CONSTRAINT citus_check_children_parent FOREIGN KEY (parent_id)
        REFERENCES citus_check_parents (parent_id),
    CONSTRAINT citus_check_children_store FOREIGN KEY (store_id) REFERENCES stores (id)
);
CREATE TABLE citus_check_unlisted (store_id bigint NOT NULL);
"""


@on_postgresql
async def test_the_check_finds_keys_and_foreign_keys_without_store_id(connection: Any) -> None:
    roles = load_table_roles() | {
        "citus_check_parents": "distributed",
        "citus_check_children": "distributed",
    }
    transaction = connection.transaction()
    await transaction.start()
    try:
        await connection.execute(BAD_SCHEMA)
        schema = await read_schema(connection)
    finally:
        await transaction.rollback()
    problems = set(schema_problems(schema, roles, load_constraint_exceptions()))
    assert problems == {
        "table citus_check_unlisted has no Citus role",
        "unique key citus_check_parents_pk of citus_check_parents lacks store_id",
        "unique key citus_check_parents_code of citus_check_parents lacks store_id",
        "unique key citus_check_parents_lower_code of citus_check_parents lacks store_id",
        "foreign key citus_check_children_parent of citus_check_children does not join on store_id",
    }
