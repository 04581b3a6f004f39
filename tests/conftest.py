"""Session-wide real servers: one PostgreSQL (embedded binaries, TCP on 127.0.0.1) and one
real PgBouncer in transaction mode in front of it; a fresh database per test, cloned from a
migrated template."""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg
import psycopg
import pytest

from tests.support.fast_pg import FastPostgres
from tests.support.pgbouncer import MISSING, PgBouncer, require_pgbouncer
from worker.embedded_pg import EmbeddedPostgres
from worker.migrate import migrate
from worker.settings import Settings

TEMPLATE = "sw_template"
_counter = itertools.count(1)


@pytest.fixture(scope="session")
def pg_base() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="swtest-", dir="/tmp"))
    base.chmod(0o755)  # the server's own account must traverse it
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server(pg_base: Path) -> Iterator[EmbeddedPostgres]:
    server = FastPostgres(pg_base / "data", tcp=True)
    server.start()
    yield server
    server.stop()


def admin_dsn(server: EmbeddedPostgres, dbname: str = "postgres") -> str:
    return f"postgresql://postgres@127.0.0.1:{server.port}/{dbname}"


@pytest.fixture(scope="session")
def template_db(pg_server: EmbeddedPostgres) -> str:
    with psycopg.connect(admin_dsn(pg_server), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {TEMPLATE}")
        conn.execute(f"CREATE DATABASE {TEMPLATE}")
    asyncio.run(migrate(admin_dsn(pg_server, TEMPLATE), Settings(database_url="unused")))
    return TEMPLATE


@pytest.fixture(scope="session")
def bouncer(pg_server: EmbeddedPostgres, pg_base: Path) -> Iterator[PgBouncer]:
    require_pgbouncer()
    server = PgBouncer(pg_base / "bouncer", pg_server.port, pool_size=4)
    server.start()
    yield server
    server.stop()


@contextmanager
def scratch_database(
    server: EmbeddedPostgres, prefix: str, template: str | None = None
) -> Iterator[str]:
    """A database of the test's own (a copy of `template`, or empty), dropped afterwards."""
    name = f"{prefix}{os.getpid()}_{next(_counter)}"
    with psycopg.connect(admin_dsn(server), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}" + (f" TEMPLATE {template}" if template else ""))
    yield name
    with psycopg.connect(admin_dsn(server), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def database(pg_server: EmbeddedPostgres, template_db: str) -> Iterator[str]:
    """A fresh, migrated database for one test; returns its name."""
    with scratch_database(pg_server, "t", template_db) as name:
        yield name


@pytest.fixture
def direct_dsn(pg_server: EmbeddedPostgres, database: str) -> str:
    return admin_dsn(pg_server, database)


@pytest.fixture
async def direct(direct_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """A plain direct connection for the test's own inserts and checks."""
    conn = await asyncpg.connect(direct_dsn)
    yield conn
    await conn.close()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """One line per reason a test was skipped, with its count (pyproject's `-r` lists only
    failures and errors): a machine without PgBouncer reads one line, not one per test."""
    reasons: dict[str, int] = {}
    for report in terminalreporter.stats.get("skipped", []):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reason = reason.removeprefix("Skipped: ")
        reasons[reason] = reasons.get(reason, 0) + 1
    for reason, count in sorted(reasons.items(), key=lambda item: -item[1]):
        terminalreporter.write_line(
            f"{count} skipped: {reason}", yellow=True, bold=reason == MISSING
        )
