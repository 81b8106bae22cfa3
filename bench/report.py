"""docs/benchmarks.md from a run's figures: the goals of the issue met or not, the
ratios that are the figures of merit (the median of the runs and their spread), the
charts (bench/charts.py), then every row measured."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.run import (
    CREATE_WITHOUT_STATISTICS,
    MIXED,
    MIXED_WRITES,
    SQLITE,
    SQLITE_VERSUS,
    TYPICAL_STATS,
    WITHOUT_STATISTICS,
    Report,
)
from bench.soak import SoakReport
from bench.soak import render as render_soak

SUITE, BASELINE, REST, SUITE_2W = "suite-1w", "baseline", "rest-peer", "suite-2w"

NAMES = {
    SUITE: "suite",
    BASELINE: "baseline",
    REST: "REST peer",
    "suite-2w": "suite, 2 workers",
    SQLITE: "suite on SQLite",
    WITHOUT_STATISTICS: "suite without statistics",
}

# The goals. Throughput and CPU per request of the suite against the bare
# baseline, on each of these scenarios (a name ending in "..." is a prefix):
MAIN_GOAL_SCENARIOS = (
    "GetCustomer",
    "CreateOrder",
    "ListCustomers, page 1",
    "ListCustomers, after...",
    "ListCustomerOrders, page 1...",
    MIXED,
    MIXED_WRITES,
)
MIN_THROUGHPUT_RATIO = 0.85
MAX_CPU_RATIO = 1.2
# A customer's statistics against GetCustomer's throughput, in the same run.
MIN_STATS_TO_GET_CUSTOMER = 0.8
# The suite on SQLite against itself on PostgreSQL.
MIN_SQLITE_RATIOS = {"GetCustomer": 0.8, "CreateOrder": 0.6}
# CreateOrder against the suite that keeps no statistics (--without-statistics, in the
# same run; else an earlier run's, --before).
MIN_CREATE_ORDER_AFTER_BEFORE = 0.95
MIN_RUNS = 3


def _number(value: float, digits: int = 0) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "-"
    if abs(value) < 100:
        digits = max(digits, 1)  # 7.3 logins a second, not 7
    return f"{value:,.{digits}f}"


def _share(part: float, whole: float) -> float:
    """part / whole; NaN (shown as "-") when nothing was measured to divide by."""
    return part / whole if whole else float("nan")


def _table(header: Iterable[str], rows: Iterable[Iterable[str]]) -> list[str]:
    header = list(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return [*lines, ""]


@dataclass(frozen=True)
class Spread:
    """A figure over the runs: its median, least and greatest."""

    median: float
    low: float
    high: float
    runs: int

    @classmethod
    def of(cls, values: list[float]) -> Spread:
        return cls(statistics.median(values), min(values), max(values), len(values))

    def text(self, digits: int = 2) -> str:
        if self.runs == 1:
            return _number(self.median, digits)
        low, high = _number(self.low, digits), _number(self.high, digits)
        return f"{_number(self.median, digits)} ({low}-{high})"


_MEDIAN_COLUMNS = ("per_second", "p50_ms", "p95_ms", "p99_ms", "cpu_ms_per_1000")


class Figures:
    """The rows of a report; a scenario measured in several runs reads as one row of
    the runs' medians (get), or run by run (ratios)."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows

    def of_runs(self, scenario: str, target: str) -> dict[int, dict[str, Any]]:
        return {
            row.get("run", 1): row
            for row in self.rows
            if row["scenario"] == scenario and row["target"] == target
        }

    def get(self, scenario: str, target: str) -> dict[str, Any] | None:
        runs = list(self.of_runs(scenario, target).values())
        if not runs:
            return None
        if len(runs) == 1:
            return runs[0]
        medians = {
            column: statistics.median(row[column] for row in runs) for column in _MEDIAN_COLUMNS
        }
        return runs[0] | medians | {"errors": sum(row["errors"] for row in runs)}

    def scenarios(self, *targets: str) -> list[str]:
        names = dict.fromkeys(row["scenario"] for row in self.rows)
        return [name for name in names if all(self.get(name, t) for t in targets)]

    def named(self, name: str, target: str) -> str | None:
        """The scenario `name` names: itself, or the first that starts with it when it
        ends in "..."."""
        if name.endswith("..."):
            prefix = name.removesuffix("...")
            return next(
                (
                    row["scenario"]
                    for row in self.rows
                    if row["scenario"].startswith(prefix) and row["target"] == target
                ),
                None,
            )
        return name if self.get(name, target) else None

    def starting(self, prefix: str, target: str) -> dict[str, Any]:
        name = self.named(prefix + "...", target)
        row = self.get(name, target) if name else None
        if row is None:
            raise KeyError(prefix)
        return row

    def ratio(
        self,
        scenario: str,
        target: str,
        other_scenario: str,
        other: str,
        column: str = "per_second",
    ) -> Spread | None:
        """scenario on `target` against other_scenario on `other`, run by run (each
        run's figures with the same run's)."""
        ours, theirs = self.of_runs(scenario, target), self.of_runs(other_scenario, other)
        values = [
            ours[run][column] / theirs[run][column]
            for run in sorted(ours.keys() & theirs.keys())
            if theirs[run][column]
        ]
        return Spread.of(values) if values else None


def publish(report: Report, output: Path, *, before: Report | None = None) -> None:
    """Writes the report's Markdown to `output` and its charts beside it, in a folder
    of the Markdown's name (docs/benchmarks.md: docs/benchmarks/*.png). Without
    matplotlib (`pip install -e '.[bench]'`; scripts/setup-bench installs it), the
    Markdown only."""
    charts: dict[str, str] = {}
    try:
        from bench import charts as drawing
    except ImportError as missing:
        print(f"no charts: {missing}", flush=True)
    else:
        folder = output.parent / output.stem
        charts = {
            name: f"{output.stem}/{file.name}"
            for name, file in drawing.draw(report, Figures(report.rows), folder).items()
        }
    output.write_text(render(report, before=before, charts=charts))


def render(
    report: Report, *, before: Report | None = None, charts: dict[str, str] | None = None
) -> str:
    figures = Figures(report.rows)
    store = report.settings["store"]
    big = report.settings["big_customer_orders"]
    runs = report.runs
    out = [
        "# Benchmarks",
        "",
        "Generated by `scripts/bench` (bench/run.py): do not edit by hand. What was slow",
        "and what changed it: [performance.md](performance.md). Beyond one machine (server",
        "replicas, a read replica, PgBouncer, a hot store, tracing): each its own study",
        "(`python -m bench.<name>`), its figures in [scaling.md](scaling.md).",
        "",
        *_table(
            ["", ""],
            [
                [key, f"`{value}`" if key == "command" else value]
                for key, value in report.machine.items()
            ],
        ),
        f"Scale: **{report.scale}**; a store of {store['customers']:,} customers and "
        f"{store['orders']:,} orders, one customer holding {big:,}"
        f" of them. Each window: {report.settings['warmup_s']:g} s of warm-up, then "
        f"{report.settings['duration_s']:g} s measured; the suite and the baseline take "
        "turns on each unary scenario, in the order suite, baseline, baseline, suite, and "
        "each of their figures joins its two windows. Unary gRPC loads come from h2load "
        "(2 HTTP/2 connections x 16 streams; logins 1 x 8), the REST peer's from h2load "
        "over HTTP/1.1 (32 connections), the rest from bench/loadgen.py (grpc.aio in one "
        "process per core). Server CPU is the server processes' own user + system time "
        "(/proc) over the measured window, per 1,000 requests. bcrypt cost: "
        f"{report.settings['bcrypt_rounds']}.",
        "",
        f"Runs: **{runs}**. Every comparison (the tables of ratios) was measured in each "
        "run, one run after the other; a figure is the median of the runs, followed by "
        "the least and the greatest in brackets, and a ratio is taken run by run (each "
        "run's figures against the same run's) before its median. Logins and two "
        "workers are measured once.",
        "",
        "The servers, one process each unless said:",
        "",
        "- **suite**: `commerce serve` with its defaults (log level INFO: one line per RPC).",
        "- **baseline**: bench/baseline.py, a minimal grpc.aio server with the same protos",
        "  and the same SQL through raw asyncpg: no ORM, no interceptors, no logging. It",
        "  aggregates a customer's order statistics on every call (no statistics table).",
        "- **REST peer**: bench/rest_peer.py, the seed's REST shape on FastAPI, uvicorn",
        "  and SQLAlchemy async.",
        "- **suite on SQLite**: `commerce serve` on a SQLite file, what `scripts/serve` runs",
        f"  ({_sqlite_store(report.settings)}).",
        "",
    ]
    out += _charts(charts or {})
    out += _goals(figures, report, before)
    out += _figures_of_merit(figures)
    out += _sqlite(figures)
    if before is not None:
        out += _before_after(figures, Figures(before.rows), before)
    out += _scale(figures, big_stats_name(report))
    out += _logins(figures, report.facts)
    out += _workers(figures)
    if report.soak:
        out += [*render_soak(SoakReport(**report.soak)).splitlines(), ""]
    out += ["## Every measurement", ""]
    out += _table(
        [
            "scenario",
            "run",
            "server",
            "req/s",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "CPU ms / 1,000 req",
            "errors",
        ],
        [
            [
                row["scenario"],
                str(row.get("run", 1)),
                NAMES.get(row["target"], row["target"]),
                _number(row["per_second"]),
                _number(row["p50_ms"], 1),
                _number(row["p95_ms"], 1),
                _number(row["p99_ms"], 1),
                _number(row["cpu_ms_per_1000"]),
                str(row["errors"]) + (f" {row['error_codes']}" if row.get("error_codes") else ""),
            ]
            for row in report.rows
        ],
    )
    created = [row for row in report.rows if "created" in row]
    if created:
        out += [
            "Writes check: orders the database gained (and cancelled) during each window "
            "of a scenario that writes them, warm-up included; h2load reads no gRPC status, "
            "so this is the proof the calls succeeded.",
            "",
            *_table(
                ["scenario", "run", "server", "orders created", "orders cancelled"],
                (
                    [
                        row["scenario"],
                        str(row.get("run", 1)),
                        NAMES.get(row["target"], row["target"]),
                        f"{row['created']:,}",
                        f"{row['cancelled']:,}" if "cancelled" in row else "-",
                    ]
                    for row in created
                ),
            ),
        ]
    return "\n".join(out)


def _figures_of_merit(figures: Figures) -> list[str]:
    return [
        "## Against the baseline and the REST peer",
        "",
        *_ratios(figures, BASELINE, "scenario"),
        *_ratios(figures, REST, "same question"),
    ]


def _ratios(figures: Figures, other: str, first_column: str) -> list[str]:
    """The suite against `other` on every scenario both served."""
    rows = []
    for name in figures.scenarios(SUITE, other):
        ours, theirs = figures.get(name, SUITE), figures.get(name, other)
        throughput = figures.ratio(name, SUITE, name, other)
        cpu = figures.ratio(name, SUITE, name, other, "cpu_ms_per_1000")
        assert ours is not None
        assert theirs is not None
        rows.append(
            [
                name,
                _number(ours["per_second"]),
                _number(theirs["per_second"]),
                throughput.text() if throughput else "-",
                cpu.text() if cpu else "-",
            ]
        )
    header = [first_column, "suite req/s", f"{NAMES[other]} req/s", "throughput ratio"]
    return _table([*header, "CPU per request ratio"], rows)


def ratio_rows(figures: Figures, other: str) -> list[tuple[str, Spread]]:
    """Each scenario's throughput ratio of the suite to `other` (for the charts)."""
    found = [
        (name, figures.ratio(name, SUITE, name, other)) for name in figures.scenarios(SUITE, other)
    ]
    return [(name, spread) for name, spread in found if spread is not None]


def _sqlite_store(settings: dict[str, Any]) -> str:
    store = settings.get("sqlite_store")
    if not store:
        return "not measured in this run"
    return (
        f"a store of {store['customers']:,} customers and {store['orders']:,} orders, "
        f"a {store['file_mb']:,} MB file"
    )


def sqlite_ratios(figures: Figures) -> list[tuple[str, Spread, Spread | None]]:
    """Per scenario: the suite's throughput on SQLite against PostgreSQL, and the CPU
    per request of its process (SQLite works inside it; PostgreSQL's own processes
    are not counted)."""
    found = []
    for scenario in MIN_SQLITE_RATIOS:
        name = scenario + SQLITE_VERSUS
        throughput = figures.ratio(name, SQLITE, name, SUITE)
        if throughput is not None:
            cpu = figures.ratio(name, SQLITE, name, SUITE, "cpu_ms_per_1000")
            found.append((scenario, throughput, cpu))
    return found


def _sqlite(figures: Figures) -> list[str]:
    rows = []
    for scenario, throughput, cpu in sqlite_ratios(figures):
        name = scenario + SQLITE_VERSUS
        on_postgres, on_sqlite = figures.get(name, SUITE), figures.get(name, SQLITE)
        assert on_postgres is not None
        assert on_sqlite is not None
        rows.append(
            [
                scenario,
                _number(on_postgres["per_second"]),
                _number(on_sqlite["per_second"]),
                throughput.text(),
                _number(on_sqlite["p50_ms"], 1),
                cpu.text() if cpu else "-",
            ]
        )
    if not rows:
        return []
    return [
        "## SQLite, the embedded default",
        "",
        "The suite on a SQLite file against the suite on PostgreSQL, the same request "
        "(of each store's typical customer), in turns (PostgreSQL, SQLite, SQLite, "
        "PostgreSQL). The CPU ratio counts the server's process only: SQLite works "
        "inside it, PostgreSQL in processes of its own.",
        "",
        *_table(
            [
                "scenario",
                "PostgreSQL req/s",
                "SQLite req/s",
                "SQLite / PostgreSQL throughput",
                "SQLite p50 ms",
                "server CPU per request ratio",
            ],
            rows,
        ),
    ]


def _before_after(figures: Figures, earlier: Figures, before: Report) -> list[str]:
    """Each scenario of the suite against the baseline, in the earlier run and now."""
    rows = []
    for name in figures.scenarios(SUITE, BASELINE):
        then, now = earlier.get(name, SUITE), figures.get(name, SUITE)
        then_ratio = earlier.ratio(name, SUITE, name, BASELINE)
        now_ratio = figures.ratio(name, SUITE, name, BASELINE)
        if then is None or now is None or then_ratio is None or now_ratio is None:
            continue
        rows.append(
            [
                name,
                _number(then["per_second"]),
                _number(now["per_second"]),
                _number(_share(now["per_second"], then["per_second"]), 2),
                then_ratio.text(),
                now_ratio.text(),
            ]
        )
    machine = before.machine
    return [
        "## Before and after",
        "",
        f"Before: commit {machine.get('commit', '?')}, {machine.get('date', '?')}. Runs on "
        "a shared machine drift between runs; the ratio to the baseline (whose code did "
        "not change) is the steadier comparison.",
        "",
        *_table(
            [
                "scenario",
                "suite req/s before",
                "suite req/s now",
                "now / before",
                "ratio to baseline before",
                "ratio to baseline now",
            ],
            rows,
        ),
    ]


def _charts(charts: dict[str, str]) -> list[str]:
    titles = {
        "ratios": "Throughput of the suite against the baseline and the REST peer",
        "soak": "The soak's throughput, window by window",
    }
    out = []
    for name, link in charts.items():
        out += [f"![{titles.get(name, name)}]({link})", ""]
    return out


@dataclass(frozen=True)
class Goal:
    goal: str
    figure: str
    met: bool | None  # None: not measured in this run

    def row(self) -> list[str]:
        verdict = {True: "met", False: "**not met**", None: "not measured"}[self.met]
        return [self.goal, self.figure, verdict]


def goals(figures: Figures, report: Report, before: Report | None) -> list[Goal]:
    """The issue's goals, each with its figure (the median of the runs) and whether
    that figure meets it."""
    found: list[Goal] = []
    for wanted in MAIN_GOAL_SCENARIOS:
        name = figures.named(wanted, SUITE)
        throughput = figures.ratio(name, SUITE, name, BASELINE) if name else None
        cpu = figures.ratio(name, SUITE, name, BASELINE, "cpu_ms_per_1000") if name else None
        goal = (
            f"{name or wanted.removesuffix('...')}: ≥ {MIN_THROUGHPUT_RATIO} of the "
            f"baseline's throughput at ≤ {MAX_CPU_RATIO}x its CPU per request"
        )
        if throughput is None or cpu is None:
            found.append(Goal(goal, "-", None))
            continue
        met = throughput.median >= MIN_THROUGHPUT_RATIO and cpu.median <= MAX_CPU_RATIO
        found.append(Goal(goal, f"{throughput.text()} at {cpu.text()}x", met))
    for stats_name in (big_stats_name(report), TYPICAL_STATS):
        share = figures.ratio(stats_name, SUITE, "GetCustomer", SUITE)
        goal = (
            f"{stats_name}: ≥ {MIN_STATS_TO_GET_CUSTOMER}x GetCustomer's throughput in the same run"
        )
        found.append(
            Goal(
                goal,
                share.text() if share else "-",
                None if share is None else share.median >= MIN_STATS_TO_GET_CUSTOMER,
            )
        )
    for scenario, throughput, _ in sqlite_ratios(figures):
        least = MIN_SQLITE_RATIOS[scenario]
        found.append(
            Goal(
                f"{scenario} on SQLite: ≥ {least}x the suite on PostgreSQL",
                throughput.text(),
                throughput.median >= least,
            )
        )
    found.append(_create_order_goal(figures, before))
    runs = report.runs
    found.append(Goal(f"{MIN_RUNS} runs, their spread stated", f"{runs} run(s)", runs >= MIN_RUNS))
    return found


def _create_order_goal(figures: Figures, before: Report | None) -> Goal:
    kept = figures.ratio(
        CREATE_WITHOUT_STATISTICS, SUITE, CREATE_WITHOUT_STATISTICS, WITHOUT_STATISTICS
    )
    if kept is not None:
        return Goal(
            f"CreateOrder with statistics maintained: ≥ {MIN_CREATE_ORDER_AFTER_BEFORE}x "
            "CreateOrder without them (--without-statistics, in turns in each run)",
            kept.text(),
            kept.median >= MIN_CREATE_ORDER_AFTER_BEFORE,
        )
    goal = (
        f"CreateOrder with statistics maintained: ≥ {MIN_CREATE_ORDER_AFTER_BEFORE}x "
        "CreateOrder without them (the --before run), judged on the ratio to the baseline"
    )
    if before is None:
        return Goal(goal, "no --before run given", None)
    earlier = Figures(before.rows)
    now = figures.ratio("CreateOrder", SUITE, "CreateOrder", BASELINE)
    then = earlier.ratio("CreateOrder", SUITE, "CreateOrder", BASELINE)
    now_row, then_row = figures.get("CreateOrder", SUITE), earlier.get("CreateOrder", SUITE)
    if now is None or then is None or now_row is None or then_row is None:
        return Goal(goal, "-", None)
    normalized = now.median / then.median
    raw = _share(now_row["per_second"], then_row["per_second"])
    figure = (
        f"{_number(normalized, 2)} (ratio to the baseline {now.text()} now, {then.text()} "
        f"before; suite req/s now / before: {_number(raw, 2)})"
    )
    return Goal(goal, figure, normalized >= MIN_CREATE_ORDER_AFTER_BEFORE)


def _goals(figures: Figures, report: Report, before: Report | None) -> list[str]:
    return [
        "## Goals",
        "",
        *_table(
            ["goal", "figure (median of the runs, spread)", ""],
            (g.row() for g in goals(figures, report, before)),
        ),
    ]


def big_stats_name(report: Report) -> str:
    """The scenario of the biggest customer's statistics."""
    return f"GetCustomerOrderStats, {report.settings['big_customer_orders']:,} orders"


def _scale(figures: Figures, stats_name: str) -> list[str]:
    rows = []
    for target in (SUITE, BASELINE):
        first = figures.get("ListCustomers, page 1", target)
        deep = figures.starting("ListCustomers, after", target)
        stats = figures.get(stats_name, target)
        if first and stats:
            rows.append(
                [
                    NAMES[target],
                    _number(first["p50_ms"], 1),
                    _number(deep["p50_ms"], 1),
                    _number(_share(deep["per_second"], first["per_second"]), 2),
                    _number(stats["p50_ms"], 1),
                ]
            )
    deep_name = figures.starting("ListCustomers, after", SUITE)["scenario"]
    return [
        "## Scale",
        "",
        *_table(
            [
                "server",
                "ListCustomers page 1, p50 ms",
                f"{deep_name}, p50 ms",
                "deep / first throughput",
                f"{stats_name}, p50 ms",
            ],
            rows,
        ),
    ]


def _logins(figures: Figures, facts: dict[str, Any]) -> list[str]:
    checks = facts.get("bcrypt_checks_per_second", float("nan"))
    rows = []
    for target in (SUITE, BASELINE):
        if row := figures.get("AuthenticateCustomer", target):
            rows.append(
                [
                    NAMES[target],
                    _number(row["per_second"], 1),
                    _number(checks, 1),
                    _number(_share(row["per_second"], checks), 2),
                ]
            )
    calm = figures.get("GetCustomer", SUITE)
    storm = figures.get("GetCustomer during a login storm", SUITE)
    out = [
        "## Logins",
        "",
        *_table(
            ["server", "AuthenticateCustomer req/s", "raw bcrypt.checkpw/s, every core", "ratio"],
            rows,
        ),
    ]
    if calm and storm:
        out += [
            f"GetCustomer on the suite: p99 {_number(calm['p99_ms'], 1)} ms and "
            f"{_number(calm['per_second'])} req/s alone; p99 {_number(storm['p99_ms'], 1)} ms "
            f"and {_number(storm['per_second'])} req/s during a storm of 8 concurrent logins "
            "(bcrypt runs in threads; the event loop stays free, the cores do not).",
            "",
        ]
    return out


def _workers(figures: Figures) -> list[str]:
    rows = []
    for name in ("GetCustomer", "CreateOrder"):
        one, two = figures.get(name, SUITE), figures.get(f"{name}, 2 worker processes", SUITE_2W)
        if one and two:
            rows.append(
                [
                    name,
                    _number(one["per_second"]),
                    _number(two["per_second"]),
                    _number(_share(two["per_second"], one["per_second"]), 2),
                ]
            )
    return [
        "## Worker processes",
        "",
        *_table(["scenario", "1 process req/s", "2 processes req/s", "ratio"], rows),
        "Two cores run the server, the load generator and PostgreSQL together: a second",
        "worker can only take what the others leave.",
        "",
    ]
