"""Before a command works: can it reach its database, and may it change the schema?

Only `migrate`, and `run`/`scan` unless told `--no-migrate`, apply migrations to a database
the user configured: a read-only command (`status`) or a data command (`enqueue`, `prune`)
never changes a production schema; if the schema is missing they say to run `migrate`. The
embedded database is our own, so every command migrates it on first use (README's quick
start)."""

from __future__ import annotations

import argparse
import socket
from urllib.parse import urlsplit

import asyncpg

from . import connections
from .cli_errors import MIGRATE_HINT, CliError
from .database_urls import Urls
from .errors import CONNECTION_ERRORS, describe
from .migrate import migrate
from .settings import Settings
from .sql import migrations, q

CONNECT_TIMEOUT = 10.0  # seconds; a firewalled host otherwise takes asyncpg's 60
# Raised by asyncpg while it parses a URL it cannot use (a port that is not a number, say).
_BAD_URL = (asyncpg.ClientConfigurationError, ValueError, OverflowError)


def may_migrate(args: argparse.Namespace, urls: Urls) -> bool:
    if args.command in ("migrate", "bench"):
        return True
    if args.command in ("run", "scan", "serve"):
        return not args.no_migrate
    return urls.embedded


async def prepare(args: argparse.Namespace, urls: Urls, settings: Settings) -> list[str]:
    """Fail in one line if a database is unreachable or its schema is missing; apply
    migrations where the command may, and return the versions applied now."""
    if not urls.embedded:
        for name, dsn in _named(urls, settings):
            await _check_reachable(name, dsn, settings)
    if may_migrate(args, urls):
        return await migrate(urls.direct, settings)
    await _check_schema(
        urls.direct,
        settings,
        current=args.command in ("run", "scan", "serve", "api-key", "domains"),
    )
    return []


def _named(urls: Urls, settings: Settings) -> list[tuple[str, str]]:
    named = [("DATABASE_URL", urls.work)]
    if urls.direct != urls.work:
        named.append(
            ("LISTEN_DATABASE_URL" if settings.listen_database_url else "DATABASE_URL", urls.direct)
        )
    return named


def where(dsn: str) -> str:
    """host:port/dbname, without the user and password."""
    try:
        parts = urlsplit(dsn)
    except ValueError:
        return "?"
    return parts.netloc.rpartition("@")[2] + parts.path


async def _check_reachable(name: str, dsn: str, settings: Settings) -> None:
    scheme = dsn.partition("://")[0] if "://" in dsn else ""
    if scheme not in ("postgresql", "postgres"):
        raise CliError(
            f"{name} is not a PostgreSQL URL (expected postgresql://user:password@host:port/dbname)"
        )
    try:
        conn = await connections.connect(dsn, settings, timeout=CONNECT_TIMEOUT)
    except _BAD_URL as exc:
        raise CliError(f"{name} is not a valid PostgreSQL URL: {_flat(str(exc))}") from None
    except (asyncpg.PostgresError, *CONNECTION_ERRORS) as exc:
        raise CliError(f"cannot connect to {name} ({where(dsn)}): {_reason(exc)}") from None
    await conn.close()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer within {CONNECT_TIMEOUT:g} s"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is PostgreSQL running there?)"
    if isinstance(exc, socket.gaierror):
        return f"unknown host ({exc.strerror})"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    if isinstance(exc, asyncpg.PostgresError):
        return _flat(str(exc))
    return _flat(describe(exc))


def _flat(text: str) -> str:
    return " ".join(text.split())


async def _check_schema(dsn: str, settings: Settings, *, current: bool) -> None:
    """The schema must be there; for a worker (`current`), also every migration this code
    expects, since its claim and outcome functions live in them."""
    conn = await connections.connect(dsn, settings, timeout=CONNECT_TIMEOUT)
    try:
        async with connections.transaction(conn, settings, durable=False):
            applied = {r["version"] for r in await conn.fetch(q("applied_migrations"))}
    except asyncpg.UndefinedTableError:
        raise CliError(
            f"no sitemap-worker schema in the database at {where(dsn)}: {MIGRATE_HINT}"
        ) from None
    finally:
        await conn.close()
    missing = [version for version, _ in migrations() if version not in applied]
    if current and missing:
        raise CliError(
            f"the schema lacks {len(missing)} migration(s) ({', '.join(missing)}): "
            f"{MIGRATE_HINT}, or drop --no-migrate"
        )
