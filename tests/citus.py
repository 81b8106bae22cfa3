"""Checks that the schema and the statements fit Citus' row-based sharding by store,
against the decisions docs/scaling.md records ("Sharding by store with Citus").

The document is the one source: marked tables in it say which role each table takes
(reference, distributed by store_id, or local to the coordinator), which constraints
are known not to fit yet, and which statements are multi-shard on purpose, each with
its reason. The tests read them from there, so the document cannot drift from what
is tested."""

from __future__ import annotations

import hashlib
import importlib
import os
import pkgutil
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import sqlglot
from sqlalchemy.dialects import sqlite
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlglot import exp

from services.core.db.statements import Statement
from tests.process import ROOT

SCALING_DOC = ROOT / "docs" / "scaling.md"
STORE_KEY = "store_id"
ROLES = ("reference", "distributed", "local")

Test = TypeVar("Test", bound=Callable[..., Any])


def on_postgresql(test: Test) -> Test:
    """Runs `test` on the session's PostgreSQL database only (Citus is PostgreSQL; the
    same instance as the other tests', so the same server), and not at all when
    COMMERCE_TEST_BACKENDS leaves PostgreSQL out."""
    backends = os.environ.get("COMMERCE_TEST_BACKENDS", "sqlite,postgresql").split(",")
    skip = pytest.mark.skipif(
        "postgresql" not in backends, reason="COMMERCE_TEST_BACKENDS leaves out PostgreSQL"
    )
    return skip(pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)(test))


# -- the document's marked tables ------------------------------------------------------------


def marked_rows(marker: str, path: Path = SCALING_DOC) -> list[list[str]]:
    """The body rows of the Markdown table between `<!-- citus:{marker} -->` and
    `<!-- /citus:{marker} -->`, each as its cells without backticks."""
    text = path.read_text()
    match = re.search(
        rf"<!-- citus:{marker} -->(.*?)<!-- /citus:{marker} -->", text, flags=re.DOTALL
    )
    if match is None:
        raise LookupError(f"{path.name} has no citus:{marker} table")
    rows = [line.strip() for line in match.group(1).splitlines() if line.strip().startswith("|")]
    cells = [[cell.strip().strip("`") for cell in row.strip("|").split("|")] for row in rows]
    return [row for row in cells[1:] if not set(row[0]) <= set("-: ")]  # header, rule


def load_table_roles(path: Path = SCALING_DOC) -> dict[str, str]:
    """Table name → "reference", "distributed" or "local"."""
    roles = {row[0]: row[1] for row in marked_rows("tables", path)}
    unknown = {table: role for table, role in roles.items() if role not in ROLES}
    if unknown:
        raise ValueError(f"unknown Citus roles in {path.name}: {unknown}")
    return roles


def load_constraint_exceptions(path: Path = SCALING_DOC) -> set[str]:
    """Names of constraints and indexes known not to fit, each listed with what must
    change before Citus."""
    return {row[0] for row in marked_rows("constraint-exceptions", path)}


def load_statement_exceptions(path: Path = SCALING_DOC) -> set[str]:
    """Keys (`statement_key`) of the statements that are multi-shard on purpose."""
    return {row[0] for row in marked_rows("multi-shard-statements", path)}


def distributed_tables(roles: Mapping[str, str]) -> set[str]:
    return {table for table, role in roles.items() if role == "distributed"}


def ddl_calls(path: Path = SCALING_DOC) -> dict[str, str]:
    """Table → role, as the document's SQL block of Citus calls gives them."""
    text = path.read_text()
    calls: dict[str, str] = {}
    for table in re.findall(r"create_reference_table\('(\w+)'\)", text):
        calls[table] = "reference"
    pattern = rf"create_distributed_table\('(\w+)',\s*'{STORE_KEY}'"
    for table in re.findall(pattern, text):
        calls[table] = "distributed"
    return calls


# -- the schema --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Key:
    """A primary key, unique constraint or unique index: its name, table, columns
    (None for an index on an expression)."""

    name: str
    table: str
    columns: tuple[str, ...] | None


@dataclass(frozen=True)
class ForeignKey:
    name: str
    table: str
    columns: tuple[str, ...]
    referred_table: str
    referred_columns: tuple[str, ...]


@dataclass(frozen=True)
class Schema:
    columns: Mapping[str, frozenset[str]]  # table → its columns
    keys: tuple[Key, ...]
    foreign_keys: tuple[ForeignKey, ...]


# Every unique index, the primary keys' and unique constraints' included; attnum 0 is
# an expression.
KEYS_SQL = """
SELECT i.relname AS name, t.relname AS "table",
       array_agg(a.attname ORDER BY k.ordinality) FILTER (WHERE k.attnum > 0) AS columns,
       bool_or(k.attnum = 0) AS on_expression
FROM pg_index x
JOIN pg_class i ON i.oid = x.indexrelid
JOIN pg_class t ON t.oid = x.indrelid
JOIN pg_namespace n ON n.oid = t.relnamespace AND n.nspname = 'public'
CROSS JOIN LATERAL unnest(x.indkey::int2[]) WITH ORDINALITY AS k(attnum, ordinality)
LEFT JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum
WHERE x.indisunique
GROUP BY i.relname, t.relname
"""

FOREIGN_KEYS_SQL = """
SELECT c.conname AS name, t.relname AS "table", r.relname AS referred_table,
       array_agg(a.attname ORDER BY k.ordinality) AS columns,
       array_agg(ra.attname ORDER BY k.ordinality) AS referred_columns
FROM pg_constraint c
JOIN pg_class t ON t.oid = c.conrelid
JOIN pg_class r ON r.oid = c.confrelid
JOIN pg_namespace n ON n.oid = t.relnamespace AND n.nspname = 'public'
CROSS JOIN LATERAL unnest(c.conkey, c.confkey) WITH ORDINALITY AS k(attnum, rattnum, ordinality)
JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum
JOIN pg_attribute ra ON ra.attrelid = r.oid AND ra.attnum = k.rattnum
WHERE c.contype = 'f'
GROUP BY c.conname, t.relname, r.relname
"""

COLUMNS_SQL = """
SELECT t.relname AS "table", array_agg(a.attname) AS columns
FROM pg_class t
JOIN pg_namespace n ON n.oid = t.relnamespace AND n.nspname = 'public'
JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE t.relkind IN ('r', 'p')
GROUP BY t.relname
"""


async def read_schema(connection: Any) -> Schema:
    """The tables, unique keys and foreign keys of the public schema (an asyncpg
    connection)."""
    columns = {
        row["table"]: frozenset(row["columns"]) for row in await connection.fetch(COLUMNS_SQL)
    }
    keys = tuple(
        Key(row["name"], row["table"], None if row["on_expression"] else tuple(row["columns"]))
        for row in await connection.fetch(KEYS_SQL)
    )
    foreign_keys = tuple(
        ForeignKey(
            row["name"],
            row["table"],
            tuple(row["columns"]),
            row["referred_table"],
            tuple(row["referred_columns"]),
        )
        for row in await connection.fetch(FOREIGN_KEYS_SQL)
    )
    return Schema(columns, keys, foreign_keys)


def schema_problems(
    schema: Schema, roles: Mapping[str, str], exceptions: Iterable[str] = ()
) -> list[str]:
    """What keeps the schema from being distributed as `roles` says: tables without a
    decision, store-owned tables not distributed, and keys and foreign keys of
    distributed tables without store_id; but the constraints named in `exceptions`."""
    allowed = set(exceptions)
    problems = [f"table {name} has no Citus role" for name in schema.columns if name not in roles]
    problems += [
        f"role given to {name}, which does not exist"
        for name in roles
        if name not in schema.columns
    ]
    for table, role in roles.items():
        owned = STORE_KEY in schema.columns.get(table, frozenset())
        if role == "distributed" and table in schema.columns and not owned:
            problems.append(f"{table} is distributed but has no {STORE_KEY}")
    for key in schema.keys:
        if roles.get(key.table) != "distributed" or key.name in allowed:
            continue
        if key.columns is None or STORE_KEY not in key.columns:
            problems.append(f"unique key {key.name} of {key.table} lacks {STORE_KEY}")
    for fk in schema.foreign_keys:
        if fk.name not in allowed:
            problems += _foreign_key_problems(fk, roles)
    return problems


def _foreign_key_problems(fk: ForeignKey, roles: Mapping[str, str]) -> list[str]:
    source, target = roles.get(fk.table), roles.get(fk.referred_table)
    if source != "distributed":
        # Citus refuses a reference or local table's key into a distributed table.
        if target == "distributed":
            return [f"foreign key {fk.name}: {source} table {fk.table} refers to distributed"]
        return []
    if target == "reference":
        return []
    if target != "distributed":
        return [f"foreign key {fk.name}: distributed {fk.table} refers to {target} table"]
    pairs = dict(zip(fk.columns, fk.referred_columns, strict=True))
    if pairs.get(STORE_KEY) != STORE_KEY:
        return [f"foreign key {fk.name} of {fk.table} does not join on {STORE_KEY}"]
    return []


# -- the statements ----------------------------------------------------------------------------


def fixed_statements() -> set[str]:
    """The SQL text, as sent to PostgreSQL, of every `Statement` a module of the
    service defines at import time: module attributes, and the PostgreSQL entry of
    the per-dialect dictionaries."""
    import services

    dialect = asyncpg_dialect()
    texts: set[str] = set()
    for module_info in pkgutil.walk_packages(services.__path__, "services."):
        module = importlib.import_module(module_info.name)
        for value in vars(module).values():
            if isinstance(value, dict):
                value = value.get("postgresql")
            # (A bare statement of SQLite's own insert() is SQLite's path only.)
            if isinstance(value, Statement) and not isinstance(value.statement, sqlite.Insert):
                texts.add(value.for_asyncpg(dialect)[0])
    return texts


def statement_key(sql: str) -> str:
    """A stable, short name for a statement: its text's digest, blanks collapsed. A
    changed statement gets a new key, and so is checked (and reviewed) anew."""
    return hashlib.sha256(" ".join(sql.split()).encode()).hexdigest()[:12]


def multi_shard_statements(texts: Iterable[str], distributed: set[str]) -> dict[str, str]:
    """Key → what is wrong, for each statement that touches a distributed table
    without pinning it to one store (or that cannot be parsed to tell)."""
    found: dict[str, str] = {}
    for sql in texts:
        problems = statement_problems(sql, distributed)
        if problems:
            found[statement_key(sql)] = "; ".join(problems) + f"\n    {' '.join(sql.split())}"
    return found


def statement_problems(sql: str, distributed: set[str]) -> list[str]:
    if not any(name in sql for name in distributed):
        return []  # cheap: BEGIN, set_config, catalog probes
    try:
        statements = sqlglot.parse(sql, read="postgres")
    except sqlglot.errors.ParseError as error:
        return [f"not parsed ({str(error).splitlines()[0]})"]
    problems: list[str] = []
    for statement in statements:
        if statement is None:
            continue
        values: set[str] = set()  # the store_id values the statement pins tables to
        for table in statement.find_all(exp.Table):
            if table.name in distributed:
                problems += _table_problems(table, values)
        if len(values) > 1:
            # Each table on one shard, but not all on the same one.
            problems.append(f"pins {STORE_KEY} to more than one value: {sorted(values)}")
    return problems


_SCOPES = (exp.Select, exp.Update, exp.Delete, exp.Insert)


def _table_problems(table: exp.Table, values: set[str]) -> list[str]:
    scope = table.find_ancestor(*_SCOPES)
    if scope is None:
        return [f"{table.name} outside a query"]
    if isinstance(scope, exp.Insert) and _insert_target(scope) is table:
        return _insert_problems(scope, table, values)
    pinned = _pinned_sources(scope)
    if table.alias_or_name not in pinned:
        return [f"{table.name} not pinned by {STORE_KEY} = <one value>"]
    values.update(pinned[table.alias_or_name])
    return []


def _insert_target(insert: exp.Insert) -> exp.Table | None:
    target = insert.this
    if isinstance(target, exp.Schema):
        target = target.this
    return target if isinstance(target, exp.Table) else None


def _insert_problems(insert: exp.Insert, table: exp.Table, values: set[str]) -> list[str]:
    """An INSERT names store_id among its columns, with one value: a parameter or
    literal in each VALUES row, or in the SELECT's list."""
    target = insert.this
    names = [column.name for column in target.expressions] if isinstance(target, exp.Schema) else []
    if STORE_KEY not in names:
        return [f"INSERT into {table.name} without {STORE_KEY} in its column list"]
    position = names.index(STORE_KEY)
    source = insert.expression
    if isinstance(source, exp.Values):
        rows = [row.expressions for row in source.expressions if isinstance(row, exp.Tuple)]
    elif isinstance(source, exp.Select):
        rows = [source.expressions]
    else:
        return [f"INSERT into {table.name} from {type(source).__name__}"]
    if rows and all(_is_one_value(row[position]) for row in rows):
        values.update(_value(row[position]).sql(dialect="postgres") for row in rows)
        return []
    if isinstance(source, exp.Select):
        # INSERT ... SELECT of the store_id of a source the SELECT pins.
        owner = _store_key_owner(_value(rows[0][position]), _source_names(source))
        pinned = _pinned_sources(source)
        if owner in pinned:
            values.update(pinned[owner])
            return []
    return [f"INSERT into {table.name} whose {STORE_KEY} is not one given value"]


def _value(node: exp.Expression) -> exp.Expression:
    """`node` without the casts, parentheses and aliases around it."""
    while isinstance(node, exp.Cast | exp.Paren | exp.Alias):
        node = node.this
    return node


def _is_one_value(node: exp.Expression) -> bool:
    return isinstance(_value(node), exp.Parameter | exp.Placeholder | exp.Literal)


def _conjuncts(condition: exp.Expression | None) -> list[exp.Expression]:
    if condition is None:
        return []
    while isinstance(condition, exp.Paren):
        condition = condition.this
    if isinstance(condition, exp.And):
        return _conjuncts(condition.this) + _conjuncts(condition.expression)
    return [condition]


def _sources(scope: exp.Expression) -> list[exp.Expression]:
    """The tables and subqueries a scope reads from: FROM, its JOINs, an UPDATE's or
    DELETE's target and its FROM/USING."""
    found: list[exp.Expression] = []
    if isinstance(scope, exp.Update | exp.Delete):
        found.append(scope.this)
    for arg in ("from", "from_", "using"):
        part = scope.args.get(arg)
        if isinstance(part, exp.From):
            found.append(part.this)
        elif isinstance(part, list):
            found += part
    found += [join.this for join in scope.args.get("joins") or ()]
    return found


def _source_names(scope: exp.Expression) -> list[str]:
    return [source.alias_or_name for source in _sources(scope)]


def _pinned_sources(scope: exp.Expression) -> dict[str, set[str]]:
    """The aliases (or names) of the scope's sources whose store_id a conjunct of its
    WHERE or JOIN conditions fixes to one value, directly or through another pinned
    source's store_id; each with the value(s) it is fixed to."""
    sources = _source_names(scope)
    conditions = _conjuncts(scope.args["where"].this if scope.args.get("where") else None)
    for join in scope.args.get("joins") or ():
        conditions += _conjuncts(join.args.get("on"))
    pinned: dict[str, set[str]] = {}
    links: list[tuple[str, str]] = []
    for condition in conditions:
        if not isinstance(condition, exp.EQ):
            continue
        left, right = condition.this, condition.expression
        left_owner, right_owner = _store_key_owner(left, sources), _store_key_owner(right, sources)
        if left_owner and _is_one_value(right):
            pinned.setdefault(left_owner, set()).add(_value(right).sql(dialect="postgres"))
        elif right_owner and _is_one_value(left):
            pinned.setdefault(right_owner, set()).add(_value(left).sql(dialect="postgres"))
        elif left_owner and right_owner:
            links.append((left_owner, right_owner))
    changed = True
    while changed:
        changed = False
        for one, other in links:
            if (one in pinned) != (other in pinned):
                known = pinned.get(one) or pinned[other]
                pinned[one] = pinned[other] = known
                changed = True
    return pinned


def _store_key_owner(node: exp.Expression, sources: list[str]) -> str | None:
    """The source whose store_id `node` is, if it is one."""
    if not (isinstance(node, exp.Column) and node.name == STORE_KEY):
        return None
    if node.table:
        return node.table
    return sources[0] if len(sources) == 1 else None
