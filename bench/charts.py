"""The charts of docs/benchmarks.md, drawn by the benchmark itself with matplotlib (the
optional `bench` dependencies): each scenario's throughput ratio to the baseline and
to the REST peer with the goal marked, and the soak's throughput window by window.

PNG files through the Agg backend, without the software stamp in their metadata, so
the same figures draw the same bytes."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")  # files only: no display, whatever the environment says

from matplotlib import pyplot

from bench.report import (
    BASELINE,
    MAIN_GOAL_SCENARIOS,
    MIN_SQLITE_RATIOS,
    MIN_THROUGHPUT_RATIO,
    REST,
    SUITE,
    Figures,
    Spread,
    ratio_rows,
    sqlite_ratios,
)
from bench.run import MIXED, MIXED_WRITES

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from bench.run import Report

# No "Software: matplotlib x.y" line: the bytes depend on the figures only.
_METADATA: dict[str, str | None] = {"Software": None}
_DPI = 100
_BAR = "#4c72b0"
_GOAL = "#c44e52"
# The mixes' names are their whole recipe (see the tables): too long for an axis.
# Past this ratio, a panel's axis is logarithmic.
LOG_SCALE_FROM = 4.0
_SHORT = {MIXED: "Mixed (15% CreateOrder)", MIXED_WRITES: "Mixed (10% writes, statistics)"}


def draw(report: Report, figures: Figures, folder: Path) -> dict[str, Path]:
    """Writes the charts into `folder`; returns them by name."""
    folder.mkdir(parents=True, exist_ok=True)
    drawn = {"ratios": _ratios(figures, folder / "ratios.png")}
    if report.soak:
        drawn["soak"] = _soak(report.soak, folder / "soak.png")
    return drawn


def _bars(axes: Axes, rows: list[tuple[str, Spread]], title: str, goals: dict[str, float]) -> None:
    """Horizontal bars of the ratios' medians, whiskers from the least to the greatest
    run, a line at 1 (as fast as the other) and a mark at each scenario's goal."""
    names = [name for name, _ in rows]
    medians = [spread.median for _, spread in rows]
    whiskers = [
        [spread.median - spread.low for _, spread in rows],
        [spread.high - spread.median for _, spread in rows],
    ]
    positions = list(range(len(rows)))
    axes.barh(positions, medians, xerr=whiskers, color=_BAR, capsize=3, height=0.6)
    axes.set_yticks(positions, [_SHORT.get(name, name) for name in names], fontsize=8)
    axes.invert_yaxis()  # the first scenario on top, as in the table
    axes.axvline(1.0, color="black", linewidth=0.8)
    for position, name in enumerate(names):
        if name in goals:
            axes.plot(
                [goals[name]] * 2,
                [position - 0.4, position + 0.4],
                color=_GOAL,
                linewidth=2,
            )
    for position, (_, spread) in enumerate(rows):
        axes.annotate(
            f"{spread.median:.2f}",
            (spread.high, position),  # past the whisker, where nothing is drawn
            xytext=(5, 0),
            textcoords="offset points",
            va="center",
            fontsize=8,
        )
    top = max([*(spread.high for _, spread in rows), 1.0])
    if top > LOG_SCALE_FROM:
        # Ratios of tens (a design that answers in constant time what the other
        # computes) would flatten every other bar to nothing on a linear axis.
        axes.set_xscale("log")
        axes.set_xlim(0.1, top * 3)
        title += ", log scale"
    else:
        axes.set_xlim(0, top * 1.18)
    axes.set_title(title, fontsize=10, loc="left")
    axes.grid(axis="x", alpha=0.3)


def _ratios(figures: Figures, path: Path) -> Path:
    to_baseline = ratio_rows(figures, BASELINE)
    goal_scenarios = {figures.named(name, SUITE) for name in MAIN_GOAL_SCENARIOS}
    to_rest = ratio_rows(figures, REST)
    on_sqlite = [
        (f"{scenario}, SQLite / PostgreSQL", spread)
        for scenario, spread, _ in sqlite_ratios(figures)
    ]
    panels = [
        (
            to_baseline,
            f"Suite / bare baseline (red: the goal, {MIN_THROUGHPUT_RATIO})",
            MIN_THROUGHPUT_RATIO,
        ),
        (to_rest, "Suite / REST peer", None),
        (on_sqlite, "Suite on SQLite / suite on PostgreSQL (red: the goal)", None),
    ]
    panels = [panel for panel in panels if panel[0]]
    heights = [len(rows) + 1.5 for rows, _, _ in panels]
    figure, axes_list = pyplot.subplots(
        len(panels),
        1,
        figsize=(9, 0.32 * sum(heights) + 1),
        gridspec_kw={"height_ratios": heights},
        squeeze=False,
    )
    for axes, (rows, title, goal) in zip(axes_list[:, 0], panels, strict=True):
        if goal is not None:
            goals = dict.fromkeys((name for name, _ in rows if name in goal_scenarios), goal)
        else:
            goals = {
                f"{scenario}, SQLite / PostgreSQL": least
                for scenario, least in MIN_SQLITE_RATIOS.items()
            }
        _bars(axes, rows, title, goals)
    axes_list[-1, 0].set_xlabel(
        "throughput ratio (median of the runs; whiskers: least to greatest)"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=_DPI, metadata=_METADATA)
    pyplot.close(figure)
    return path


def _soak(soak: dict[str, object], path: Path) -> Path:
    per_second = [float(rate) for rate in soak["per_second"]]  # type: ignore[attr-defined]
    width = float(soak["bucket_seconds"])  # type: ignore[arg-type]
    figure, axes = pyplot.subplots(figsize=(9, 3.5))
    starts = [index * width for index in range(len(per_second))]
    axes.bar(starts, per_second, width=width * 0.9, align="edge", color=_BAR)
    axes.axhline(per_second[0], color=_GOAL, linewidth=1, linestyle="--")
    unit = "min" if width >= 60 else "s"
    scale = 60 if unit == "min" else 1
    axes.set_xticks(starts, [f"{start / scale:g}" for start in starts], fontsize=8)
    axes.set_xlabel(f"window start ({unit}); dashed: the first window")
    axes.set_ylabel("calls per second")
    axes.set_title(
        f"Soak: a mixed load for {float(soak['minutes']):g} min on a store that starts "  # type: ignore[arg-type]
        "empty, autovacuum off",
        fontsize=10,
        loc="left",
    )
    axes.set_ylim(0, max(per_second) * 1.15 or 1)
    axes.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=_DPI, metadata=_METADATA)
    pyplot.close(figure)
    return path
