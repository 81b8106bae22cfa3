"""The `commerce` command: serve, migrate and administer stores."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sqlite3
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import asyncpg
import sqlalchemy.exc
from pydantic import ValidationError
from sqlalchemy.engine import make_url

from services.core.db.engine import create_engine
from services.core.db.statements import Transaction
from services.core.db.stores import create_store, list_stores, set_store_active
from services.core.db.unit_of_work import TenantDatabase
from services.core.domain.errors import DomainError, NotFound
from services.core.logs import configure_logging
from services.core.rpc.callers import load_callers, new_token, parse_scopes, token_digest
from services.core.settings import Settings, env_name

Command = Callable[[argparse.Namespace, Settings], int]
StoreAction = Callable[[Transaction, argparse.Namespace], Awaitable[None]]


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args, unknown = parser.parse_known_args(argv)
    # Errors in the usage of the (sub)command they belong to, not the top-level one.
    command_parser: argparse.ArgumentParser = args.parser
    if unknown:
        command_parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        settings = _settings(args)
    except ValidationError as error:
        problem = error.errors()[0]
        message = problem["msg"].removeprefix("Value error, ")
        where = f" {problem['loc'][0]}" if problem["loc"] else ""
        command_parser.error(f"bad setting{where}: {message}")
    configure_logging(settings.log_level, settings.log_format)
    command: Command = args.run
    try:
        return command(args, settings)
    except DomainError as error:
        print(f"error: {error.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as error:  # an operator gets one line, never a traceback
        if (reason := database_problem(error)) is None:
            raise
        url = make_url(settings.database_url).render_as_string(hide_password=True)
        print(
            f"error: database {url} (setting DATABASE_URL or COMMERCE_DATABASE_URL, "
            f"or --database-url): {reason}",
            file=sys.stderr,
        )
        return 1


def database_problem(error: BaseException) -> str | None:
    """What went wrong with the database, in one line; None when `error` is no
    database error (a bug, whose traceback then helps)."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, _DATABASE_ERRORS):
            reason = str(getattr(seen, "orig", None) or seen).splitlines()[0]
            if "no such table" in reason or ("relation" in reason and "does not exist" in reason):
                reason += "; run `commerce migrate` first"
            return reason or type(seen).__name__
        seen = seen.__cause__ or seen.__context__
    return None


# What a database out of reach, missing or not yet migrated raises, by layer.
_DATABASE_ERRORS = (
    sqlalchemy.exc.SQLAlchemyError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    sqlite3.Error,
    OSError,
)


# Settings that are never flags: a secret on the command line shows in `ps`.
_ENVIRONMENT_ONLY = {"page_token_secret", "database_url"}


def _settings(args: argparse.Namespace) -> Settings:
    """Environment variables, overridden by the flags that were given."""
    flags: dict[str, Any] = {"database_url": args.database_url}
    flags |= {name: getattr(args, name, None) for name in Settings.model_fields}
    return Settings(**{name: value for name, value in flags.items() if value is not None})


def _add_settings_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per setting, documented by the setting itself."""
    for name, field in Settings.model_fields.items():
        if name in _ENVIRONMENT_ONLY:
            continue
        default = field.get_default(call_default_factory=True)
        shown = f"default {default}" if default not in ("", None) else "default unset"
        parser.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            metavar=name.split("_")[-1].upper(),
            help=f"{field.description} (env {env_name(name)}; {shown})",
        )


_DATABASE_URL_HELP = (
    "database URL (env DATABASE_URL; default sqlite+aiosqlite:///commerce.db); the "
    "environment keeps a password out of `ps`"
)


def _add_database_url(parser: argparse.ArgumentParser) -> None:
    """--database-url before the command or after it (SUPPRESS: an absent one after
    the command leaves the one before it alone)."""
    parser.add_argument("--database-url", default=argparse.SUPPRESS, help=_DATABASE_URL_HELP)


class _Commands(argparse._SubParsersAction):  # type: ignore[type-arg]
    """Subcommands that know their own parser (for errors in their own usage) and
    take --database-url like the top level."""

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = super().add_parser(name, **kwargs)
        parser.set_defaults(parser=parser)
        _add_database_url(parser)
        return parser


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="commerce", description=__doc__)
    parser.add_argument("--database-url", help=_DATABASE_URL_HELP)
    commands = parser.add_subparsers(required=True, metavar="COMMAND", action=_Commands)

    serve = commands.add_parser(
        "serve",
        usage="%(prog)s [--database-url URL] [--SETTING VALUE ...] (--help lists them)",
        help="run the gRPC server",
        description="Run the gRPC server until SIGTERM or SIGINT. Every flag has an "
        "environment variable; flags win.",
    )
    _add_settings_flags(serve)
    serve.set_defaults(run=_serve)

    relay = commands.add_parser(
        "relay",
        usage="%(prog)s [--database-url URL] [--SETTING VALUE ...] (--help lists them)",
        help="run the event relay alone, without the gRPC server",
        description="Place committed events in the feed and publish them to NATS "
        "(--nats-url) until SIGTERM or SIGINT, as `serve` does beside its server. "
        "Several may run: one relays, the others stand by. Takes the settings of serve.",
    )
    _add_settings_flags(relay)
    relay.set_defaults(run=_relay)

    probe = commands.add_parser(
        "health",
        help="ask a running server's health service; exit 0 when SERVING",
        description="A health probe for containers and scripts: exit 0 when the server "
        "reports SERVING, 1 otherwise.",
    )
    probe.add_argument("--address", default="127.0.0.1:50051", help="host:port of the server")
    probe.add_argument("--service", default="", help="a service's full name (default: overall)")
    probe.add_argument("--tls-ca-file", help="PEM CA that signed the server's certificate: use TLS")
    probe.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for an answer")
    probe.set_defaults(run=_health)

    migrate = commands.add_parser("migrate", help="apply the database migrations of every module")
    migrate.set_defaults(run=_migrate)

    stores = commands.add_parser("stores", help="create and list stores (tenants)")
    store_commands = stores.add_subparsers(required=True, metavar="ACTION", action=_Commands)
    create = store_commands.add_parser("create", help="create a store and print its id")
    create.add_argument("--name", required=True)
    create.set_defaults(run=_store_command(_create_store))
    listing = store_commands.add_parser("list", help="list every store")
    listing.set_defaults(run=_store_command(_list_stores))
    for action, active in (("activate", True), ("deactivate", False)):
        toggle = store_commands.add_parser(action, help=f"{action} a store")
        toggle.add_argument("store_id", type=int)
        toggle.set_defaults(run=_store_command(_set_active), active=active)

    order_stats = commands.add_parser(
        "order-stats", help="check (and repair) the customers' kept order statistics"
    )
    order_stats_commands = order_stats.add_subparsers(
        required=True, metavar="ACTION", action=_Commands
    )
    check = order_stats_commands.add_parser(
        "check",
        help="compare each customer's kept order statistics with their orders",
        description="Recomputes each customer's order statistics from their orders, a "
        "range of customers at a time, and prints each customer and currency whose kept "
        "statistics differ (after a change to the tables by hand, say). Exits 1 when any "
        "differ, unless --repair made them what the orders say.",
    )
    check.add_argument("--store", type=int, help="only this store (default: every store)")
    check.add_argument("--repair", action="store_true", help="rewrite the statistics that differ")
    check.add_argument(
        "--batch", type=int, default=1000, help="customer ids per statement (default 1000)"
    )
    check.set_defaults(run=_check_order_stats)

    callers = commands.add_parser("callers", help="make tokens for caller authentication")
    caller_commands = callers.add_subparsers(required=True, metavar="ACTION", action=_Commands)
    new_caller = caller_commands.add_parser(
        "new",
        help="print a new token for a caller, and its line for the callers file",
        description="Prints a new random token (give it to the caller; it is not stored) "
        "and the line to add to COMMERCE_CALLER_TOKENS_FILE (it holds the token's "
        "SHA-256 only, and the caller's scopes).",
    )
    new_caller.add_argument("name", help="the caller's name, e.g. billing")
    new_caller.add_argument(
        "--scope",
        action="append",
        type=_scopes,
        help="what the caller may call: '*' (default: everything), '<module>:read', "
        "'<module>:write' (reads included) or '*:read'; repeat it or separate with commas, "
        "e.g. --scope customers:read,orders:write",
    )
    new_caller.set_defaults(run=_new_caller)
    return parser


def _scopes(text: str) -> frozenset[str]:
    try:
        return parse_scopes(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _new_caller(args: argparse.Namespace, settings: Settings) -> int:
    token = new_token()
    scopes = ",".join(sorted(set().union(*args.scope))) if args.scope else ""
    line = f"{args.name} {token_digest(token)} {scopes}".rstrip()
    print(f"token (give it to {args.name}; shown once): {token}")
    print(f"line for the callers file: {line}")
    return 0


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    if settings.caller_tokens_file:
        try:
            load_callers(settings.caller_tokens_file)
        except (OSError, ValueError) as error:
            print(f"error: bad caller tokens file: {error}", file=sys.stderr)
            return 2
    if settings.tracing and (problem := _tracing_problem()):
        print(f"error: {problem}", file=sys.stderr)
        return 2
    if settings.workers > 1:
        # Before anything imports prometheus_client: the supervisor sets its mode.
        from services.supervisor import supervise

        return supervise(settings)
    from services.supervisor import stop_with_supervisor

    supervised = stop_with_supervisor()  # first thing; False unless a supervised worker
    from services.listen import CannotListen
    from services.server import module_problem, serve  # late: other commands need no grpc

    if problem := module_problem(settings.module_names):
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(settings, share_port=supervised))
    except CannotListen as error:
        print(f"error: {error} (setting {error.setting})", file=sys.stderr)
        return 2
    return 0


def _tracing_problem() -> str | None:
    """Why the OTEL_* variables describe no exporter this process can make."""
    from services.core.tracing import exporter_classes  # late: off, it is never imported

    try:
        exporter_classes()
    except ValueError as error:
        return str(error)
    return None


def _relay(args: argparse.Namespace, settings: Settings) -> int:
    _require_sqlite_directory(settings.database_url)
    from services.core.events.relay import relay_only

    asyncio.run(relay_only(settings))
    return 0


def _health(args: argparse.Namespace, settings: Settings) -> int:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    if args.tls_ca_file:
        credentials = grpc.ssl_channel_credentials(Path(args.tls_ca_file).read_bytes())
        channel = grpc.secure_channel(args.address, credentials)
    else:
        channel = grpc.insecure_channel(args.address)
    with channel:
        try:
            # The typeshed stub declares no methods on HealthStub.
            response = health_pb2_grpc.HealthStub(channel).Check(  # type: ignore[attr-defined]
                health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout
            )
        except grpc.RpcError as error:
            print(f"{error.code().name}: {error.details()}", file=sys.stderr)
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    print(status)
    return 0 if response.status == health_pb2.HealthCheckResponse.SERVING else 1


def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    # Alembic announces each of its plugins as it is imported; that is not news.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    from services.migrations import upgrade

    _require_sqlite_directory(settings.database_url)
    upgrade(settings.database_url, pooler=settings.database_pooler)
    print("database is up to date")
    return 0


def _many(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _check_order_stats(args: argparse.Namespace, settings: Settings) -> int:
    from services.orders.customer_orders import check_statistics  # late, as serve's

    if args.batch < 1:
        args.parser.error("--batch must be at least 1")
    _require_sqlite_directory(settings.database_url)

    async def check() -> int:
        engine = create_engine(settings.database_url, pool_size=1, pooler=settings.database_pooler)
        database = TenantDatabase(engine)
        try:
            async with database.maintenance(transaction=False) as statements:
                stores = [store.id for store in await list_stores(statements)]
            if args.store is not None:
                if args.store not in stores:
                    raise NotFound("store", str(args.store))
                stores = [args.store]
            drifted = 0
            for store_id in stores:
                drifted += await check_statistics(
                    database, store_id, repair=args.repair, batch=args.batch, found=print
                )
        finally:
            database.close()
            await engine.dispose()
        done = " (repaired)" if args.repair and drifted else ""
        print(f"checked {_many(len(stores), 'store')}: {_many(drifted, 'customer')} drifted{done}")
        return drifted

    drifted = asyncio.run(check())
    return 1 if drifted and not args.repair else 0


def _require_sqlite_directory(url: str) -> None:
    """Fails early on a SQLite file in a directory that does not exist: the driver's
    own failure comes from its thread after the event loop closed, as a traceback."""
    database = make_url(url).database
    if make_url(url).get_backend_name() == "sqlite" and database and database != ":memory:":
        directory = Path(database).parent
        if not directory.is_dir():
            raise FileNotFoundError(f"no such directory: {directory}")


def _store_command(action: StoreAction) -> Command:
    """Runs `action` in one committed transaction."""

    def run(args: argparse.Namespace, settings: Settings) -> int:
        _require_sqlite_directory(settings.database_url)

        async def in_transaction() -> None:
            engine = create_engine(
                settings.database_url, pool_size=1, pooler=settings.database_pooler
            )
            database = TenantDatabase(engine)
            try:
                async with database.maintenance() as statements:
                    await action(statements, args)
                    await statements.commit()
            finally:
                database.close()
                await engine.dispose()

        asyncio.run(in_transaction())
        return 0

    return run


async def _create_store(statements: Transaction, args: argparse.Namespace) -> None:
    store = await create_store(statements, args.name)
    print(f"created store {store.id} ({store.name})")


async def _list_stores(statements: Transaction, args: argparse.Namespace) -> None:
    for store in await list_stores(statements):
        print(f"{store.id}\t{'active' if store.is_active else 'inactive'}\t{store.name}")


async def _set_active(statements: Transaction, args: argparse.Namespace) -> None:
    store = await set_store_active(statements, args.store_id, args.active)
    print(f"store {store.id} is now {'active' if store.is_active else 'inactive'}")


if __name__ == "__main__":
    sys.exit(main())
