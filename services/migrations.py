"""Applies the Alembic migrations of every module (all branch heads).

The migration scripts live in the top-level `migrations/` folder, one version folder
per module. An installed (non-editable) copy, as in the container image, finds them
through COMMERCE_MIGRATIONS_DIR."""

from __future__ import annotations

import os
from pathlib import Path

from alembic import command
from alembic.config import Config

from services.core.db.engine import Pooler

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def migrations_dir() -> Path:
    configured = os.environ.get("COMMERCE_MIGRATIONS_DIR")
    return Path(configured) if configured else PROJECT_ROOT / "migrations"


def alembic_config(database_url: str) -> Config:
    """The configuration alembic.ini describes, built here so that it needs no file
    and picks up every module's version folder by itself."""
    scripts = migrations_dir()
    config = Config()
    config.set_main_option("script_location", str(scripts))
    config.set_main_option("path_separator", "os")
    versions = sorted(
        str(path)
        for path in (scripts / "versions").iterdir()
        if path.is_dir() and not path.name.startswith("__")
    )
    config.set_main_option("version_locations", os.pathsep.join(versions))
    config.attributes["database_url"] = database_url
    return config


def upgrade(database_url: str, revision: str = "heads", *, pooler: Pooler = "none") -> None:
    """Brings the database to `revision` (default: the newest of every module).
    Synchronous: Alembic's async env runs its own event loop. `pooler`: what the URL
    goes through (services.core.db.engine.create_engine); migrations are best run
    straight against the server, but run through a transaction pooler too."""
    config = alembic_config(database_url)
    config.attributes["database_pooler"] = pooler
    command.upgrade(config, revision)
