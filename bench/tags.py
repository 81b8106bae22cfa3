"""ListCustomers with and without the tag filter: `python -m bench.tags`.

Seeds (once; reused after, as bench.run does) a store of 1,000,000 customers with
bench.seed, then tags them in bulk with INSERT ... SELECT: "vip" on 10% of the
customers, "rare" on 0.1%, chosen by a hash of the id (spread over the whole id
range, the same on every run), customers.tags written from customer_tags in the
same transaction. Then it starts the suite (`commerce serve`) and loads it with
h2load (32 calls in flight, as bench.run) for page 1 and a page after customer
900,000, without a filter and with each tag, and prints each figure with the ratio
filtered / unfiltered, and the EXPLAIN (ANALYZE, BUFFERS) of the server's own
statement. Nothing is asserted about time.

Usage: python -m bench.tags [--database-url URL] [--smoke] [--json FILE]"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import asyncpg
from commerce.customers.v1 import customer_service_pb2 as customers_pb
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg

from bench import servers, study
from bench.measure import Result
from bench.run import Bench, Report, Scale, Unary, machine, prepared_store
from bench.seed import SeededStore
from bench.urls import asyncpg_dsn, sqlalchemy_url
from services.core.domain.pagination import PageTokenCodec
from services.customers import queries

_LIST = "/commerce.customers.v1.CustomerService/ListCustomers"
PAGE_SIZE = 50

# tag: (salt of its hash, one customer in `every` has it)
TAGS = {"vip": (201, 10), "rare": (202, 1000)}

# Every tag of TAGS on the customers its hash picks (the same pick as bench.seed's
# bench_pick, written out: no helper function to create), then customers.tags from
# those rows: the two agree as the service keeps them.
_INSERT_TAG = """
INSERT INTO customer_tags (store_id, tag, customer_id)
SELECT $1, $2, n FROM generate_series(1, $3::bigint) AS n
WHERE (hashint8extended(n, $4) & 9223372036854775807) % $5 = 0
"""
_WRITE_TAGS_COLUMN = """
UPDATE customers SET tags = t.tags
FROM (SELECT customer_id, string_agg(tag, ',' ORDER BY tag) AS tags
      FROM customer_tags WHERE store_id = $1 GROUP BY customer_id) AS t
WHERE customers.store_id = $1 AND customers.customer_id = t.customer_id
"""
_TAG_COUNTS = """
SELECT tag, count(*) FROM customer_tags WHERE store_id = $1 GROUP BY tag ORDER BY tag
"""


async def tag_customers(url: str, store: SeededStore) -> dict[str, int]:
    """Tags the store's customers (unless an earlier run did); each tag's count."""
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        counts = dict(await connection.fetch(_TAG_COUNTS, store.store_id))
        if set(counts) != set(TAGS):
            async with connection.transaction():
                await connection.execute(
                    "DELETE FROM customer_tags WHERE store_id = $1", store.store_id
                )
                for tag, (salt, every) in TAGS.items():
                    await connection.execute(
                        _INSERT_TAG, store.store_id, tag, store.customers, salt, every
                    )
                await connection.execute(_WRITE_TAGS_COLUMN, store.store_id)
            await connection.execute("VACUUM (ANALYZE) customers")
            await connection.execute("VACUUM (ANALYZE) customer_tags")
            counts = dict(await connection.fetch(_TAG_COUNTS, store.store_id))
    finally:
        await connection.close()
    return {str(tag): int(count) for tag, count in counts.items()}


def _scope(store_id: int, tag: str) -> dict[str, Any]:
    """The page-token scope of ListCustomers by `tag` (none: ""), as the service makes it."""
    scope: dict[str, Any] = {"list": "customers", "store_id": store_id, "active": None, "query": ""}
    return scope | ({"tag": tag} if tag else {})


async def _after_for_deep_page(url: str, store: SeededStore, tag: str, after: int) -> int:
    """The id a deep page of `tag` starts after: the last tagged customer at or
    before `after` (where the previous page would have ended)."""
    if not tag:
        return after
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        found = await connection.fetchval(
            "SELECT max(customer_id) FROM customer_tags"
            " WHERE store_id = $1 AND tag = $2 AND customer_id <= $3",
            store.store_id,
            tag,
            after,
        )
    finally:
        await connection.close()
    return int(found or 0)


def scenarios(url: str, store: SeededStore) -> dict[tuple[str, str], Unary]:
    """(page, tag) -> the call; tag "" is the unfiltered list."""
    codec = PageTokenCodec(servers.PAGE_TOKEN_SECRET)
    deep = store.customers * 9 // 10
    calls = {}
    for tag in ("", *TAGS):
        calls["page 1", tag] = Unary(
            _LIST,
            customers_pb.ListCustomersRequest(
                store_id=store.store_id, page_size=PAGE_SIZE, tag=tag
            ),
        )
        after = asyncio.run(_after_for_deep_page(url, store, tag, deep))
        token = codec.encode(_scope(store.store_id, tag), [after])
        calls[f"after customer {deep:,}", tag] = Unary(
            _LIST,
            customers_pb.ListCustomersRequest(
                store_id=store.store_id, page_size=PAGE_SIZE, page_token=token, tag=tag
            ),
        )
    return calls


def _check(calls: dict[tuple[str, str], Unary], target: str, *, full: bool) -> None:
    """Each call answers customers (no error, no empty list; a full page at full
    scale), every customer of a filtered one carrying its tag: h2load sees no gRPC
    status."""
    for (page, tag), call in calls.items():
        response: Any = call.check(target)
        if not response.customers or (full and len(response.customers) != PAGE_SIZE):
            raise RuntimeError(f"{page} {tag!r}: {len(response.customers)} customers")
        if tag and any(tag not in customer.tags for customer in response.customers):
            raise RuntimeError(f"{page} {tag!r}: a customer without the tag")


async def explain(url: str, store: SeededStore, tag: str, after: int) -> str:
    """EXPLAIN (ANALYZE, BUFFERS) of the statement the server runs for a page of
    `tag`, planned as the server plans it: for the values of each call
    (plan_cache_mode = force_custom_plan, services.core.db.engine)."""
    statement = queries._TAGGED_CUSTOMER_PAGES["postgresql"][None, False, False]
    params = {"store_id": store.store_id, "tag": tag, "after_id": after, "limit": PAGE_SIZE + 1}
    dialect = PGDialect_asyncpg()  # type: ignore[no-untyped-call]
    sql, arguments = statement.arguments(dialect, params)
    connection = await asyncpg.connect(
        asyncpg_dsn(url), server_settings={"plan_cache_mode": "force_custom_plan"}
    )
    try:
        rows = await connection.fetch(f"EXPLAIN (ANALYZE, BUFFERS) {sql}", *arguments)
    finally:
        await connection.close()
    return "\n".join(row[0] for row in rows)


# Customers only: the orders bench.run seeds play no part in a customer list. Logins
# are not measured: the cheapest bcrypt cost seeds fastest.
SCALES = {
    "full": Scale(1_000_000, 0, 0, warmup=2, duration=10, bcrypt_rounds=4),
    "smoke": Scale(20_000, 0, 0, warmup=0.5, duration=1, bcrypt_rounds=4),
}


def run(url: str, scale_name: str) -> Report:
    scale = SCALES[scale_name]
    store = prepared_store(url, scale, reseed=False)
    counts = asyncio.run(tag_customers(url, store))
    report = Report(
        scale_name,
        machine=machine(),
        settings={"store": asdict(store), "tags": counts, "page_size": PAGE_SIZE}
        | {"warmup_s": scale.warmup, "duration_s": scale.duration},
    )
    calls = scenarios(url, store)
    deep = store.customers * 9 // 10
    for tag in TAGS:
        after = asyncio.run(_after_for_deep_page(url, store, tag, deep))
        report.facts[f"explain {tag}, after customer {after}"] = asyncio.run(
            explain(url, store, tag, after)
        )
    bench = Bench(url, scale, store, report)
    probe = (store.store_id, store.typical_customer_id)
    with (
        tempfile.TemporaryDirectory(prefix="bench-logs-") as logs,
        servers.suite(url, probe, Path(logs), bcrypt_rounds=scale.bcrypt_rounds) as ours,
    ):
        _check(calls, ours.target, full=scale_name == "full")
        # Unfiltered, then each tag, page by page: A B C then C B A, each figure the
        # two windows together, so a drift of the machine weighs on all alike.
        for page in dict.fromkeys(page for page, _ in calls):
            tags = ["", *TAGS]
            windows: dict[str, list[Any]] = {tag: [] for tag in tags}
            for tag in [*tags, *reversed(tags)]:
                windows[tag].append(bench._unary(calls[page, tag], ours, bench.load)[0])
            combined = {tag: Result.combined(results) for tag, results in windows.items()}
            for tag, result in combined.items():
                ratio = result.per_second / combined[""].per_second
                report.add(
                    f"ListCustomers, {page}, " + (f"tag {tag!r}" if tag else "no filter"),
                    ours.name,
                    result,
                    tag=tag,
                    page=page,
                    ratio_to_unfiltered=round(ratio, 3),
                )
    return report


def render(report: Report) -> str:
    lines = [
        f"store: {report.settings['store']['customers']:,} customers;"
        f" tagged: {report.settings['tags']}",
        "",
        "| scenario | req/s | p50 ms | p99 ms | req/s vs no filter | errors |",
        "|---|---|---|---|---|---|",
    ]
    for row in report.rows:
        lines.append(
            f"| {row['scenario']} | {row['per_second']:,.0f} | {row['p50_ms']} |"
            f" {row['p99_ms']} | {row['ratio_to_unfiltered']:.2f} | {row['errors']} |"
        )
    for name, plan in report.facts.items():
        lines += ["", f"{name}:", "", plan]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = study.arguments("tags", __doc__, database="commerce_bench_tags").parse_args(argv)
    report = run(sqlalchemy_url(args.database_url), study.scale(args))
    return study.publish(report, render(report), args.json)


if __name__ == "__main__":
    sys.exit(main())
