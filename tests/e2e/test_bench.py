"""The benchmark's smoke run (scripts/bench --smoke): every scenario, tiny and short,
so the suite keeps working. It checks what was served, never how fast."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from bench.broker import nats_server_available
from bench.pooler import pgbouncer_available
from bench.replication import replication_available
from bench.run import (
    CREATE_WITHOUT_STATISTICS,
    MIXED,
    MIXED_WRITES,
    SQLITE_VERSUS,
    TYPICAL_STATS,
    WITHOUT_STATISTICS,
)
from bench.soak import HEADING as SOAK_HEADING
from tests.conftest import BACKENDS, POSTGRES_URL
from tests.process import ROOT

pytestmark = pytest.mark.skipif(
    "postgresql" not in BACKENDS, reason="the benchmark runs on PostgreSQL"
)


OWN = "own"  # _study's database: one of the run's own, dropped after it


def _study(
    module: str, tmp_path: Path, *, database: str | None = OWN, timeout: float = 540
) -> tuple[Any, str]:
    """Runs `python -m bench.<module> --smoke` on `database` of the local server (OWN:
    a fresh one, dropped after; None: none given) and returns its JSON figures and
    what it printed."""
    figures = tmp_path / f"{module}.json"
    command = [sys.executable, "-m", f"bench.{module}", "--smoke", "--json", str(figures)]
    own = f"commerce_bench_{module}_smoke_{uuid.uuid4().hex[:8]}" if database == OWN else None
    if database is not None:
        url = make_url(POSTGRES_URL).set(database=own or database)
        command += ["--database-url", url.render_as_string(hide_password=False)]
    try:
        done = subprocess.run(
            command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
        )
    finally:
        if own is not None:
            asyncio.run(_drop(own))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(figures.read_text()), done.stdout


async def _drop(database: str) -> None:
    admin = make_url(POSTGRES_URL).set(drivername="postgresql", database="postgres")
    connection = await asyncpg.connect(admin.render_as_string(hide_password=False))
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    finally:
        await connection.close()


@dataclass(frozen=True)
class SmokeRun:
    """`scripts/bench --smoke` in two runs with its soak: its JSON and its page."""

    figures: Path
    report: dict[str, Any]
    page: Path


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> SmokeRun:
    """The whole benchmark, tiny and short, once for the tests of what it reports."""
    folder = tmp_path_factory.mktemp("bench")
    database = f"commerce_bench_smoke_{uuid.uuid4().hex[:8]}"
    url = make_url(POSTGRES_URL).set(database=database).render_as_string(hide_password=False)
    figures, page = folder / "figures.json", folder / "benchmarks.md"
    command = [sys.executable, "-m", "bench.run", "--smoke", "--database-url", url]
    command += ["--runs", "2", "--output", str(page), "--json", str(figures)]
    # The code as it is stands in for a revision without statistics: the mechanism.
    command += ["--without-statistics", "HEAD"]
    try:
        done = subprocess.run(
            command, cwd=ROOT, capture_output=True, text=True, timeout=840, check=False
        )
    finally:
        for name in (database, f"{database}_soak", f"{database}_sqlite_seed"):
            asyncio.run(_drop(name))
        for stale in (ROOT / ".bench").glob(f"{database}*"):
            stale.unlink()
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return SmokeRun(figures, json.loads(figures.read_text()), page)


@pytest.mark.timeout(900)
def test_every_scenario_is_served_by_every_server(smoke_run):
    rows = smoke_run.report["rows"]
    served = {(row["scenario"], row["target"], row["run"]) for row in rows}
    for run in (1, 2):
        for scenario in (
            "GetCustomer",
            "CreateOrder",
            "GetOrder",
            "ListOrders, page 1",
            TYPICAL_STATS,
            "UpdateCustomer",
            "UpdateOrderStatus",
            "CreateCustomer",
            MIXED,
            MIXED_WRITES,
        ):
            assert (scenario, "suite-1w", run) in served, (scenario, run)
            assert (scenario, "baseline", run) in served, (scenario, run)
        assert ("GetCustomer", "rest-peer", run) in served
        assert (CREATE_WITHOUT_STATISTICS, WITHOUT_STATISTICS, run) in served
    assert ("AuthenticateCustomer", "suite-1w", 1) in served
    assert ("GetCustomer, 2 worker processes", "suite-2w", 1) in served
    for row in rows:
        assert row["errors"] == 0, row
        assert row["per_second"] > 0, row
        assert row["cpu_ms_per_1000"] > 0, row
        if row["scenario"].startswith("CreateOrder"):
            # h2load reads no gRPC status: the database's new orders prove the calls
            # worked (the count includes the warm-up's).
            assert row["created"] >= row["requests"] > 0, row
        if row["scenario"] == MIXED_WRITES:
            # One call in ten writes: some orders were made, some cancelled.
            assert row["created"] > 0, row
            assert row["cancelled"] > 0, row
    table = smoke_run.page.read_text()
    assert "| GetCustomer | " in table
    assert "throughput ratio" in table


@pytest.mark.timeout(900)
def test_the_suite_on_sqlite_is_measured_against_itself_on_postgresql(smoke_run):
    served = {(row["scenario"], row["target"], row["run"]) for row in smoke_run.report["rows"]}
    for run in (1, 2):
        for scenario in ("GetCustomer", "CreateOrder"):
            assert (scenario + SQLITE_VERSUS, "suite-1w", run) in served
            assert (scenario + SQLITE_VERSUS, "suite-sqlite", run) in served
    store = smoke_run.report["settings"]["sqlite_store"]
    assert store["rows"]["orders"] == store["orders"] > 0
    assert store["rows"]["customers"] == store["customers"] > 0
    assert store["file_mb"] > 0
    table = smoke_run.page.read_text()
    sqlite = _section(table, "## SQLite, the embedded default")
    assert any(line.startswith("| GetCustomer | ") for line in sqlite), sqlite
    assert any(line.startswith("| CreateOrder | ") for line in sqlite), sqlite
    assert f"{store['customers']:,} customers and {store['orders']:,} orders" in table


@pytest.mark.timeout(900)
def test_the_report_gives_each_ratio_with_the_spread_of_the_runs(smoke_run):
    assert smoke_run.report["runs"] == 2
    ratios = _section(smoke_run.page.read_text(), "## Against the baseline and the REST peer")
    # The median, then the least and the greatest run in brackets.
    spread = re.compile(r"^\| GetCustomer \| [\d,.]+ \| [\d,.]+ \| [\d.]+ \([\d.]+-[\d.]+\) \|")
    assert any(spread.match(line) for line in ratios), ratios


@pytest.mark.timeout(900)
def test_the_soak_runs_with_the_benchmark_and_is_reported(smoke_run):
    soak = smoke_run.report["soak"]
    assert len(soak["per_second"]) == 3  # 6 s in windows of 2 s
    assert all(rate > 0 for rate in soak["per_second"])
    assert soak["errors"] == {}
    windows = _section(smoke_run.page.read_text(), SOAK_HEADING)
    assert sum(line.startswith("| 0 to 2 s |") for line in windows) == 1


@pytest.mark.timeout(900)
def test_the_report_says_which_goal_is_met(smoke_run):
    goals = _section(smoke_run.page.read_text(), "## Goals")
    verdicts = [line.rsplit("|", 2)[1].strip() for line in goals if line.startswith("| ")][1:]
    # The main scenarios, two statistics, two SQLite, CreateOrder before/after, runs.
    assert len(verdicts) == 7 + 2 + 2 + 1 + 1, goals
    assert set(verdicts) <= {"met", "**not met**", "not measured"}
    assert "not measured" not in verdicts
    (kept,) = [line for line in goals if line.startswith("| CreateOrder with statistics")]
    assert "--without-statistics" in kept, kept
    (runs,) = [line for line in goals if line.startswith("| 3 runs")]
    assert runs.endswith("| 2 run(s) | **not met** |")


@pytest.mark.timeout(900)
def test_the_benchmark_draws_its_charts(smoke_run):
    table = smoke_run.page.read_text()
    for chart in ("ratios", "soak"):
        assert f"(benchmarks/{chart}.png)" in table
        width, height = _png_size(smoke_run.page.parent / "benchmarks" / f"{chart}.png")
        assert 400 <= width <= 2000, (chart, width)
        assert 200 <= height <= 3000, (chart, height)


@pytest.mark.timeout(900)
def test_an_earlier_run_is_set_beside_this_one(smoke_run, tmp_path):
    """Rendered again from its JSON with an earlier run's (here the same one): before
    and after, and the goal of CreateOrder judged on the two (the run's own pair of
    CreateOrder with and without statistics left out)."""
    figures = smoke_run.report | {
        "rows": [
            row for row in smoke_run.report["rows"] if row["scenario"] != CREATE_WITHOUT_STATISTICS
        ]
    }
    alone = tmp_path / "figures.json"
    alone.write_text(json.dumps(figures))
    again = tmp_path / "again.md"
    command = [sys.executable, "-m", "bench.run", "--from-json", str(alone)]
    command += ["--before", str(alone), "--output", str(again)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rendered = again.read_text()
    compared = _section(rendered, "## Before and after")
    assert any(line.startswith("| ListOrders, page 1 | ") for line in compared), compared
    goals = _section(rendered, "## Goals")
    (create_order,) = [line for line in goals if line.startswith("| CreateOrder with statistics")]
    assert "| 1.00 (ratio to the baseline" in create_order
    assert (tmp_path / "again" / "ratios.png").exists()


def _section(markdown: str, heading: str) -> list[str]:
    """The lines of a section of the Markdown, up to the next heading."""
    lines = markdown.splitlines()
    start = lines.index(heading) + 1
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("## ")), len(lines))
    return lines[start:end]


def _png_size(path: Path) -> tuple[int, int]:
    """A PNG's width and height, from its header (and proof it is one)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    assert data[12:16] == b"IHDR", path
    assert b"tIME" not in data  # no time stamp: the same figures draw the same bytes
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


@pytest.mark.timeout(300)
def test_the_soak_reports_every_window_of_a_load_that_succeeds(tmp_path):
    database = f"commerce_soak_smoke_{uuid.uuid4().hex[:8]}"
    url = make_url(POSTGRES_URL).set(database=database).render_as_string(hide_password=False)
    figures = tmp_path / "soak.json"
    command = [sys.executable, "-m", "bench.soak", "--minutes", "0.1", "--bucket-seconds", "2"]
    command += ["--database-url", url, "--json", str(figures)]
    try:
        done = subprocess.run(
            command, cwd=ROOT, capture_output=True, text=True, timeout=240, check=False
        )
    finally:
        asyncio.run(_drop(database))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "| 0 to 2 s |" in done.stdout

    report = json.loads(figures.read_text())
    assert len(report["per_second"]) == 3
    assert all(rate > 0 for rate in report["per_second"])
    assert report["errors"] == {}
    assert set(report["calls"]) == {
        "GetCustomer",
        "CreateOrder",
        "ListCustomers",
        "ListCustomerOrders",
        "GetCustomerOrderStats",
    }
    assert report["orders_at_end"] > 0


@pytest.mark.timeout(600)
@pytest.mark.skipif(not nats_server_available(), reason="needs nats-server (Debian's)")
def test_the_event_scenarios_report_their_figures(tmp_path):
    """bench.events, tiny and short: every scenario measures something and says so."""
    report, _ = _study("events", tmp_path, database="postgres")
    rows = report["rows"]
    creates = [row for row in rows if row["scenario"] == "CreateOrder"]
    assert {row["target"] for row in creates} >= {"events to NATS", "events, no NATS"}
    for row in creates:
        assert row["errors"] == 0, row
        assert row["created"] >= row["requests"] > 0, row
    ratios = [row for row in rows if row["scenario"] == "CreateOrder ratio"]
    assert ratios
    assert all(row["ratio"] > 0 for row in ratios)
    (relayed,) = [row for row in rows if row["scenario"] == "Relay, backlog"]
    assert relayed["events"] == 300
    assert relayed["per_second"] > 0
    (latency,) = [row for row in rows if row["scenario"].startswith("Commit to JetStream")]
    assert latency["orders"] > 0
    assert latency["errors"] == {}
    assert latency["missing"] == 0
    assert latency["events"] == latency["orders"]
    assert latency["p99_ms"] >= latency["p50_ms"]  # numbers, not NaN


@pytest.mark.timeout(600)
def test_the_tag_filter_scenarios_report_their_figures(tmp_path):
    """bench.tags, tiny and short: each page with and without a tag is served (the
    bench checks each answer has customers, all with the tag) and gets its ratio,
    and the plan shown walks the tag index."""
    report, _ = _study("tags", tmp_path)
    assert set(report["settings"]["tags"]) == {"vip", "rare"}
    rows = report["rows"]
    assert {(row["page"], row["tag"]) for row in rows} == {
        (page, tag) for page in ("page 1", "after customer 18,000") for tag in ("", "vip", "rare")
    }
    for row in rows:
        assert row["errors"] == 0, row
        assert row["requests"] > 0, row
        assert row["ratio_to_unfiltered"] > 0, row
    for plan in report["facts"].values():
        assert "Index Only Scan using pk_customer_tags on customer_tags" in plan


@pytest.mark.timeout(600)
def test_the_export_scenarios_report_their_figures():
    """bench.export, tiny and short: both exports read every customer of the store
    and report the server's memory around them."""
    database = f"commerce_bench_export_smoke_{uuid.uuid4().hex[:8]}"
    url = make_url(POSTGRES_URL).set(database=database).render_as_string(hide_password=False)
    command = [sys.executable, "-m", "bench.export", "--database-url", url]
    command += ["--customers", "1200", "--pause", "0.5"]
    try:
        done = subprocess.run(
            command, cwd=ROOT, capture_output=True, text=True, timeout=540, check=False
        )
    finally:
        asyncio.run(_drop(database))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    report = json.loads(done.stdout[done.stdout.index("{") :])
    assert report["full_speed"]["rows"] == 1200
    # 500 customers a message: three messages.
    assert report["full_speed"]["messages"] == 3
    assert report["full_speed"]["peak_rss_kb"] >= report["full_speed"]["rss_before_kb"] > 0
    assert report["slow_reader"]["rows"] == 1200
    assert report["slow_reader"]["rss_max_during_pause_kb"] > 0


@pytest.mark.timeout(600)
@pytest.mark.skipif(not replication_available(), reason="needs Debian's postgresql-common")
def test_the_read_replica_scenarios_report_their_figures(tmp_path):
    """bench.read_replica, tiny and short: the mixed load is served without errors on
    the primary alone and with the replica, which serves the replica-tolerant reads;
    the replica stopped under load fails no call and its health turns NOT_SERVING."""
    report, _ = _study("read_replica", tmp_path, database=None)
    alone, with_replica = report["loads"]["primary only"], report["loads"]["with replica"]
    for figures_of_one in (alone, with_replica):
        assert figures_of_one["errors"] == {}
        assert figures_of_one["reads_per_second"] > 0
    assert alone["tolerant_reads_served_by"].get("replica", 0) == 0
    assert alone["tolerant_reads_served_by"]["primary"] > 0
    assert with_replica["tolerant_reads_served_by"]["replica"] > 0
    fallback = report["fallback"]
    assert fallback["calls_during"] > 0
    assert fallback["failed_calls"] == 0
    assert fallback["health_not_serving_after_stop_s"] > 0


@pytest.mark.timeout(600)
def test_the_tracing_scenarios_report_their_figures(tmp_path):
    """bench.tracing, tiny and short: the server before tracing, with it off and with
    it on each serve GetCustomer; on, the stand-in collector receives the spans."""
    report, _ = _study("tracing", tmp_path)
    rows = {row["target"]: row for row in report["rows"]}
    assert set(rows) == {"before", "off", "on"}
    for row in rows.values():
        assert row["errors"] == 0, row
        assert row["requests"] > 0, row
        assert row["per_second_vs_off"] > 0, row
    assert rows["before"]["spans_per_request"] == rows["off"]["spans_per_request"] == 0
    assert rows["on"]["spans_per_request"] > 0


@pytest.mark.timeout(600)
def test_the_hot_store_scenarios_report_their_figures(tmp_path):
    """bench.hot_store, tiny and short: every creator's orders are served in the hot
    store and spread out, each load gets its ratio and what the server's connections
    were doing."""
    report, _ = _study("hot_store", tmp_path)
    rows = report["rows"]
    assert [row["load"] for row in rows] == ["hot", "spread"]
    for row in rows:
        assert row["errors"] == 0, row
        # Counted in the database: the warm-up's orders too.
        assert row["created"] >= row["requests"] > 0, row
        assert row["ratio_to_spread"] > 0, row
        assert row["connections"], row  # the sampler saw the server at work


@pytest.mark.timeout(300)
def test_the_replica_kill_reports_no_failure_and_no_duplicate(tmp_path):
    """bench.replica_kill, tiny and short: three replicas, one killed under load; the
    figures are there, and the calls the client may retry neither failed nor ran twice."""
    report, printed = _study("replica_kill", tmp_path, database="postgres", timeout=240)
    assert "| failed calls | 0 |" in printed
    assert report["failed"] == {}
    assert report["duplicates"] == 0
    assert report["unanswered_creates"] == 0
    assert report["in_flight_at_kill"] > 0
    assert report["per_second_before"] > 0
    assert report["per_second_after"] > 0
    assert "recovery_s" in report  # None when the short smoke run has no second for it


@pytest.mark.timeout(600)
@pytest.mark.skipif(not pgbouncer_available(), reason="scripts/setup-pgbouncer installs it")
def test_the_pgbouncer_scenarios_report_their_figures(tmp_path):
    """bench.pgbouncer, tiny and short: GetCustomer and CreateOrder served straight
    and through both PgBouncers, each with its ratio to direct, and every order
    h2load saw answered is in the database."""
    report, _ = _study("pgbouncer", tmp_path)
    rows = report["rows"]
    setups = ["direct", "pgbouncer, 4 server connections", "pgbouncer, 2 server connections"]
    assert {(row["scenario"], row["target"]) for row in rows} == {
        (scenario, setup) for scenario in ("GetCustomer", "CreateOrder") for setup in setups
    }
    for row in rows:
        assert row["errors"] == 0, row
        assert row["requests"] > 0, row
        assert row["ratio_to_direct"] > 0, row
        if row["scenario"] == "CreateOrder":
            assert row["created"] >= row["requests"], row  # warm-up ones too
