"""Process settings, read from environment variables (and overridden by CLI flags)."""

from __future__ import annotations

import os

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///commerce.db"

# Drivers the server runs on; a bare scheme is completed with its async driver.
_ASYNC_DRIVERS = {
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "sqlite": "sqlite+aiosqlite",
}


class Settings(BaseSettings):
    """Everything a server process needs to know; see README for each variable."""

    model_config = SettingsConfigDict(env_prefix="COMMERCE_", extra="ignore", frozen=True)

    database_url: str = Field(
        default=DEFAULT_DATABASE_URL,
        validation_alias=AliasChoices("COMMERCE_DATABASE_URL", "DATABASE_URL"),
        description="SQLAlchemy URL; postgresql:// and sqlite:// get their async driver.",
    )
    listen_address: str = Field(default="127.0.0.1:50051", description="host:port to serve on.")
    db_pool_size: int = Field(default=10, ge=1, le=1000, description="Database connections.")
    bcrypt_rounds: int = Field(default=12, ge=4, le=20, description="bcrypt cost factor.")
    password_hash_workers: int = Field(
        default_factory=lambda: os.cpu_count() or 1,
        ge=1,
        le=256,
        description="Threads hashing and checking passwords, off the event loop.",
    )
    page_token_secret: str = Field(
        default="",
        description=(
            "Key that signs page tokens. Empty: a random key per process, so tokens do "
            "not survive a restart. Set it when several processes serve one database."
        ),
    )
    store_cache_seconds: float = Field(
        default=5.0,
        ge=0,
        description="How long a process trusts a store's active/inactive status (0: never).",
    )
    log_level: str = Field(default="INFO", description="Python logging level.")

    @field_validator("database_url")
    @classmethod
    def _complete_driver(cls, url: str) -> str:
        scheme, separator, rest = url.partition("://")
        if not separator:
            raise ValueError("must look like postgresql://user@host/db or sqlite:///file.db")
        return f"{_ASYNC_DRIVERS.get(scheme, scheme)}://{rest}"
