"""What every study of one question (`python -m bench.<name>`) shares: its command
line (`--smoke`, `--database-url`, `--json`) and how it publishes its report."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

REUSED = "a PostgreSQL database for the benchmark (created if missing; its store reused)"


def arguments(
    module: str, description: str | None, *, database: str | None, database_help: str = REUSED
) -> argparse.ArgumentParser:
    """The parser of `python -m bench.<module>`, with `--database-url` defaulting to
    `database` on the local server (none when `database` is None); a study adds its
    own options before parsing."""
    parser = argparse.ArgumentParser(prog=f"python -m bench.{module}", description=description)
    parser.add_argument("--smoke", action="store_true", help="tiny and short: does it all work?")
    if database is not None:
        parser.add_argument(
            "--database-url",
            default=f"postgresql://postgres@127.0.0.1:5432/{database}",
            help=database_help,
        )
    parser.add_argument("--json", help="also write every figure to this JSON file")
    return parser


def scale(args: argparse.Namespace) -> str:
    return "smoke" if args.smoke else "full"


def publish(report: Any, markdown: str, json_file: str | None) -> int:
    """Prints the report's Markdown and, with `json_file`, writes every figure there;
    the exit status of a study that ran to its end."""
    print(markdown)
    if json_file:
        figures = (
            asdict(report) if is_dataclass(report) and not isinstance(report, type) else report
        )
        Path(json_file).write_text(json.dumps(figures, indent=1))
    return 0
