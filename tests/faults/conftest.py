"""The fault suite drives real worker processes, like the acceptance tier, and reuses its
fixtures (`spawn`, `worker_env`, `watcher`); servers it must restart are its own."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import psycopg
import pytest

from tests.acceptance.conftest import FAST, spawn, watcher, worker_env  # noqa: F401  (fixtures)
from tests.support.restartable import TEMPLATE, RestartablePostgres
from tests.support.sites import Site
from tests.support.tcpproxy import TcpProxy
from worker.embedded_pg import EmbeddedPostgres
from worker.migrate import migrate
from worker.settings import Settings

NS = 'xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"'


@pytest.fixture(scope="module")
def restartable_pg(pg_base: Path, request: pytest.FixtureRequest) -> Iterator[RestartablePostgres]:
    """A cluster of this module's own, with a migrated template database."""
    server = RestartablePostgres(
        pg_base / f"restartable-{request.module.__name__.rsplit('.', 1)[-1]}"
    )
    server.start()
    try:
        with psycopg.connect(server.dsn_for(), autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {TEMPLATE}")
            conn.execute(f"CREATE DATABASE {TEMPLATE}")
        asyncio.run(migrate(server.dsn_for(TEMPLATE), Settings(database_url="unused")))
        yield server
    finally:
        server.stop_mode("immediate")  # nothing to keep: skip the checkpoint


_db_counter = iter(range(1, 1_000_000))


@pytest.fixture
def restartable_db(restartable_pg: RestartablePostgres) -> Iterator[str]:
    """A fresh migrated database on the restartable cluster; the cluster is brought back up
    after the test whatever state the test left it in."""
    restartable_pg.ensure_running()
    name = f"f{os.getpid()}_{next(_db_counter)}"
    restartable_pg.create_database(name)
    yield name
    restartable_pg.ensure_running()
    restartable_pg.drop_database(name)


@pytest.fixture
async def restartable_conn(
    restartable_pg: RestartablePostgres, restartable_db: str
) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(restartable_pg.dsn_for(restartable_db))
    yield conn
    conn.terminate()


@pytest.fixture
async def site() -> AsyncIterator[Site]:
    """A small site: robots.txt -> one sitemap of 20 URLs; the other well-known paths 404.
    Modules that need another site define their own `site`."""
    async with Site() as s:
        s.add("/robots.txt", f"Sitemap: {s.url('/sitemap.xml')}\n")
        body = "".join(f"<url><loc>{s.url(f'/p/{i}')}</loc></url>" for i in range(20))
        s.add("/sitemap.xml", f'<?xml version="1.0"?><urlset {NS}>{body}</urlset>')
        yield s


@pytest.fixture
async def proxy(pg_server: EmbeddedPostgres) -> AsyncIterator[TcpProxy]:
    """A TCP proxy of the tests' own in front of the test server, to cut or silence a link."""
    p = TcpProxy(pg_server.port)
    await p.start()
    yield p
    await p.close()
