"""The two spellings of a PostgreSQL URL the benchmark's parts take: asyncpg's own,
and SQLAlchemy's with its asyncpg driver named. Either is accepted everywhere."""

from __future__ import annotations


def _rest(url: str) -> str:
    scheme, separator, rest = url.partition("://")
    if not separator or scheme.split("+", 1)[0] not in ("postgresql", "postgres"):
        raise ValueError(f"not a PostgreSQL URL: {url!r}")
    return rest


def asyncpg_dsn(url: str) -> str:
    """postgresql://..., as asyncpg takes it: SQLAlchemy's +asyncpg dropped."""
    return f"postgresql://{_rest(url)}"


def sqlalchemy_url(url: str) -> str:
    """postgresql+asyncpg://..., as SQLAlchemy (and `commerce`) take it."""
    return f"postgresql+asyncpg://{_rest(url)}"
