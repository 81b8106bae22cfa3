"""Applies the Alembic migrations of every module (all branch heads)."""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def alembic_config(database_url: str) -> Config:
    config = Config(str(PROJECT_ROOT / "alembic.ini"))
    config.attributes["database_url"] = database_url
    return config


def upgrade(database_url: str, revision: str = "heads") -> None:
    """Brings the database to `revision` (default: the newest of every module).
    Synchronous: Alembic's async env runs its own event loop."""
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)  # start-up chatter
    command.upgrade(alembic_config(database_url), revision)
