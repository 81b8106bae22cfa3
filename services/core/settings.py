"""Process settings: environment variables, overridden by `commerce serve` flags.

Each field's description is its documentation: `commerce serve --help` shows it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///commerce.db"
ENV_PREFIX = "COMMERCE_"

# Drivers the server runs on; a bare scheme is completed with its async driver.
_ASYNC_DRIVERS = {
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "sqlite": "sqlite+aiosqlite",
}


class Settings(BaseSettings):
    """Everything a server process needs to know."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    database_url: str = Field(
        default=DEFAULT_DATABASE_URL,
        validation_alias=AliasChoices("COMMERCE_DATABASE_URL", "DATABASE_URL"),
        description="database URL; postgresql:// and sqlite:// get their async driver "
        "(env DATABASE_URL works too)",
    )
    database_pooler: Literal["none", "transaction"] = Field(
        default="none",
        description="what database_url reaches PostgreSQL through: 'none' (the server "
        "itself) or 'transaction' (a pooler such as PgBouncer in pool_mode=transaction: "
        "no prepared statements kept, every statement in a transaction, no LISTEN)",
    )
    database_listen_url: str = Field(
        default="",
        description="PostgreSQL URL to LISTEN for event notifications on, straight to the "
        "server (empty: database_url, or polling every event_poll_seconds when "
        "database_pooler is 'transaction')",
    )
    listen_address: str = Field(default="127.0.0.1:50051", description="host:port to serve on")
    http_listen_address: str = Field(
        default="",
        description="host:port to serve the same services over plain HTTP on, in the "
        "Connect protocol (JSON or protobuf bodies; curl, browsers) (empty: off)",
    )
    services: str = Field(
        default="",
        description="comma-separated modules to mount: customers, orders, loyalty, events "
        "(empty: all)",
    )
    workers: int = Field(
        default=1,
        ge=1,
        le=64,
        description="server processes sharing the port (SO_REUSEPORT), under one supervisor",
    )
    grace_seconds: float = Field(
        default=10.0, ge=0, description="time in-flight RPCs get to finish at shutdown"
    )
    tls_cert_file: str = Field(default="", description="PEM certificate chain: serve TLS")
    tls_key_file: str = Field(default="", description="PEM private key of --tls-cert-file")
    tls_client_ca_file: str = Field(
        default="",
        description="PEM CA bundle: require client certificates it signed (mutual TLS)",
    )
    max_concurrent_rpcs: int = Field(
        default=1000,
        ge=1,
        le=1_000_000,
        description="RPCs one process runs at once; more get RESOURCE_EXHAUSTED at once",
    )
    max_message_bytes: int = Field(
        default=4 * 1024 * 1024,
        ge=64 * 1024,
        le=64 * 1024 * 1024,
        description="largest request or response; larger ones are RESOURCE_EXHAUSTED",
    )
    keepalive_seconds: float = Field(
        default=60.0,
        ge=1,
        description="idle time after which the server pings a connection",
    )
    keepalive_timeout_seconds: float = Field(
        default=20.0,
        ge=1,
        description="a peer that does not answer a keepalive ping within this is "
        "dropped, with its calls",
    )
    max_connection_age_seconds: float = Field(
        default=0.0,
        ge=0,
        description="close each client connection gracefully (GOAWAY) once it is this "
        "old, so that clients connect again and spread over replicas added since; calls "
        "in flight get grace_seconds to finish (0: connections live on)",
    )
    caller_tokens_file: str = Field(
        default="",
        description="file of '<caller> <sha256 of its token>' lines: every call but health "
        "checks then needs 'authorization: Bearer <token>' (see `commerce callers new`)",
    )
    db_pool_size: int = Field(
        default=10, ge=1, le=1000, description="database connections per process"
    )
    db_connect_timeout: float = Field(
        default=5.0,
        gt=0,
        description="seconds to wait for a database connection, new or from the pool "
        "(pool busy that long: RESOURCE_EXHAUSTED)",
    )
    read_database_url: str = Field(
        default="",
        description="PostgreSQL streaming replica that serves the reads that may lag a "
        "little (lists and statistics); bypassed while down or behind by more than "
        "read_replica_max_lag_seconds (empty: every read goes to database_url)",
    )
    read_replica_max_lag_seconds: float = Field(
        default=2.0,
        gt=0,
        le=3600,
        description="how far the read replica may be behind the primary and still serve "
        "reads, checked every health_check_interval",
    )
    health_check_interval: float = Field(
        default=2.0, gt=0, description="seconds between database probes of the health service"
    )
    bcrypt_rounds: int = Field(default=12, ge=4, le=20, description="bcrypt cost factor")
    password_hash_workers: int = Field(
        default_factory=lambda: os.cpu_count() or 1,
        ge=1,
        le=256,
        description="threads hashing and checking passwords, off the event loop",
    )
    login_failures_per_email: int = Field(
        default=10,
        ge=1,
        le=1_000_000,
        description="failed logins one email of a store may have within the login window; "
        "further attempts are RESOURCE_EXHAUSTED until the window passes",
    )
    login_failures_per_caller: int = Field(
        default=100,
        ge=0,
        le=1_000_000,
        description="failed logins one caller (its token's name, else its IP address) may "
        "have in a store within the login window (0: no per-caller limit)",
    )
    login_window_seconds: float = Field(
        default=900.0,
        gt=0,
        le=86_400,
        description="the window failed logins are counted in, from the first failure",
    )
    page_token_secret: str = Field(
        default="",
        description="key that signs page tokens; empty: random per process, so tokens "
        "die with it (environment only, never a flag)",
    )
    store_cache_seconds: float = Field(
        default=5.0,
        ge=0,
        description="how long a process trusts a store's active/inactive status (0: never)",
    )
    request_id_retention_hours: float = Field(
        default=168.0,
        gt=0,
        description="how long a create's request_id is remembered: a retry within it "
        "returns the first result, a retry after it creates anew",
    )
    nats_url: str = Field(
        default="",
        description="NATS server(s) to publish events to through JetStream, such as "
        "nats://127.0.0.1:4222 (comma-separated for a cluster; empty: events are kept for "
        "the feed only)",
    )
    nats_stream: str = Field(
        default="COMMERCE_EVENTS",
        description="the JetStream stream events go to, created when missing",
    )
    nats_subject_prefix: str = Field(
        default="commerce.events",
        description="subjects of events: <prefix>.<store_id>.<module>.<EventName>",
    )
    event_relay: bool = Field(
        default=True,
        description="run the event relay in this process (one process relays at a time; "
        "the others stand by and take over when it stops)",
    )
    event_relay_lease_seconds: float = Field(
        default=5.0,
        gt=0,
        le=300,
        description="how long the relay's lease lasts: a standby takes over this long "
        "after the relaying process stopped renewing it",
    )
    event_poll_seconds: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="how often the relay and event streams look for new events when "
        "nothing woke them (PostgreSQL wakes them on commit; SQLite across processes polls)",
    )
    event_retention_hours: float = Field(
        default=168.0,
        gt=0,
        description="how long events stay readable in the feed after they were published",
    )
    metrics_address: str = Field(
        default="", description="host:port of the Prometheus /metrics endpoint (empty: off)"
    )
    tracing: bool = Field(
        default=False,
        description="OpenTelemetry traces: a span per call, child of the caller's "
        "traceparent, with its SQL statements; exported as the OTEL_* variables say "
        "(default OTLP over gRPC to localhost:4317); trace ids in the log lines",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="log level"
    )
    log_format: Literal["text", "json"] = Field(
        default="text", description="log lines as text or as one JSON object each"
    )

    @field_validator("database_url", "read_database_url", "database_listen_url")
    @classmethod
    def _complete_driver(cls, url: str, info: ValidationInfo) -> str:
        if not url and info.field_name != "database_url":  # empty: off
            return url
        scheme, separator, rest = url.partition("://")
        if not separator:
            raise ValueError("must look like postgresql://user@host/db or sqlite:///file.db")
        if scheme.partition("+")[0] not in _ASYNC_DRIVERS:
            raise ValueError(
                f"{scheme}:// is not supported; use postgresql://user@host/db or sqlite:///file.db"
            )
        return f"{_ASYNC_DRIVERS.get(scheme, scheme)}://{rest}"

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, level: str) -> str:
        return level.upper()

    @field_validator("listen_address", "http_listen_address", "metrics_address")
    @classmethod
    def _host_port(cls, address: str) -> str:
        if address and not address.rpartition(":")[2].isdigit():
            raise ValueError("must be host:port")
        return address

    @field_validator("tls_cert_file", "tls_key_file", "tls_client_ca_file")
    @classmethod
    def _readable(cls, path: str) -> str:
        if path and not Path(path).is_file():
            raise ValueError(f"no such file: {path}")
        return path

    @model_validator(mode="after")
    def _tls_pairs(self) -> Settings:
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ValueError("tls_cert_file and tls_key_file go together")
        if self.workers > 1 and (
            self.listen_address.endswith(":0") or self.http_listen_address.endswith(":0")
        ):
            raise ValueError("several workers need a fixed port to share, not :0")
        if self.http_listen_address and self.http_listen_address == self.listen_address:
            raise ValueError("http_listen_address must differ from listen_address")
        if self.database_listen_url and not self.database_listen_url.startswith("postgresql"):
            raise ValueError("database_listen_url must be a PostgreSQL URL")
        if self.tls_client_ca_file and not self.tls_cert_file:
            raise ValueError("tls_client_ca_file (mutual TLS) needs tls_cert_file and tls_key_file")
        if self.read_database_url and (
            not self.database_url.startswith("postgresql")
            or not self.read_database_url.startswith("postgresql")
        ):
            raise ValueError(
                "read_database_url (a read replica) needs PostgreSQL for both it and "
                "database_url; SQLite has no replicas"
            )
        return self

    @property
    def module_names(self) -> list[str] | None:
        names = [name.strip() for name in self.services.split(",") if name.strip()]
        return names or None


def env_name(field: str) -> str:
    return ENV_PREFIX + field.upper()
