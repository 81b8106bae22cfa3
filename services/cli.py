"""The `commerce` command: serve, migrate and administer stores."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from services.core.database import UnitOfWork, create_engine, create_session_factory
from services.core.errors import DomainError
from services.core.settings import Settings
from services.core.stores import create_store, list_stores, set_store_active

Command = Callable[[argparse.Namespace, Settings], int]
StoreAction = Callable[[AsyncSession, argparse.Namespace], Awaitable[None]]


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        settings = _settings(args)
    except ValidationError as error:
        problem = error.errors()[0]
        message = problem["msg"].removeprefix("Value error, ")
        parser.error(f"bad setting {problem['loc'][0]}: {message}")
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    command: Command = args.run
    try:
        return command(args, settings)
    except DomainError as error:
        print(f"error: {error.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _settings(args: argparse.Namespace) -> Settings:
    """Environment variables, overridden by the flags that were given."""
    flags: dict[str, Any] = {
        "database_url": args.database_url,
        "listen_address": getattr(args, "listen", None),
    }
    return Settings(**{name: value for name, value in flags.items() if value is not None})


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="commerce", description=__doc__)
    parser.add_argument(
        "--database-url",
        help="database URL (env DATABASE_URL; default sqlite+aiosqlite:///commerce.db)",
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the gRPC server")
    serve.add_argument(
        "--listen", help="host:port (env COMMERCE_LISTEN_ADDRESS; default 127.0.0.1:50051)"
    )
    serve.add_argument("--services", help="comma-separated modules to mount (default: all)")
    serve.add_argument(
        "--grace", type=float, default=10.0, help="seconds in-flight RPCs get at shutdown"
    )
    serve.set_defaults(run=_serve)

    migrate = commands.add_parser("migrate", help="apply the database migrations of every module")
    migrate.set_defaults(run=_migrate)

    stores = commands.add_parser("stores", help="create and list stores (tenants)")
    store_commands = stores.add_subparsers(required=True, metavar="ACTION")
    create = store_commands.add_parser("create", help="create a store and print its id")
    create.add_argument("--name", required=True)
    create.set_defaults(run=_store_command(_create_store))
    listing = store_commands.add_parser("list", help="list every store")
    listing.set_defaults(run=_store_command(_list_stores))
    for action, active in (("activate", True), ("deactivate", False)):
        toggle = store_commands.add_parser(action, help=f"{action} a store")
        toggle.add_argument("store_id", type=int)
        toggle.set_defaults(run=_store_command(_set_active), active=active)
    return parser


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    from services.server import serve  # imported late: the other commands need no grpc

    modules = [name.strip() for name in args.services.split(",")] if args.services else None
    asyncio.run(serve(settings, modules, grace=args.grace))
    return 0


def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    from services.migrations import upgrade

    upgrade(settings.database_url)
    print("database is up to date")
    return 0


def _store_command(action: StoreAction) -> Command:
    """Runs `action` in one committed transaction."""

    def run(args: argparse.Namespace, settings: Settings) -> int:
        async def in_transaction() -> None:
            engine = create_engine(settings.database_url, pool_size=1)
            try:
                async with UnitOfWork(create_session_factory(engine)) as uow:
                    await action(uow.session, args)
                    await uow.commit()
            finally:
                await engine.dispose()

        asyncio.run(in_transaction())
        return 0

    return run


async def _create_store(session: AsyncSession, args: argparse.Namespace) -> None:
    store = await create_store(session, args.name)
    print(f"created store {store.id} ({store.name})")


async def _list_stores(session: AsyncSession, args: argparse.Namespace) -> None:
    for store in await list_stores(session):
        print(f"{store.id}\t{'active' if store.is_active else 'inactive'}\t{store.name}")


async def _set_active(session: AsyncSession, args: argparse.Namespace) -> None:
    store = await set_store_active(session, args.store_id, args.active)
    print(f"store {store.id} is now {'active' if store.is_active else 'inactive'}")


if __name__ == "__main__":
    sys.exit(main())
