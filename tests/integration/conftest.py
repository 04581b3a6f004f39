"""Integration tests run twice: with job work direct to PostgreSQL, and through PgBouncer in
transaction mode (LISTEN always direct, as in production)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import asyncpg
import pytest

from tests.support.sites import Site
from worker import connections
from worker.database_urls import Urls
from worker.settings import Settings


@pytest.fixture(params=["direct", "pgbouncer"])
def urls(request: pytest.FixtureRequest, direct_dsn: str, database: str) -> Urls:
    if request.param == "direct":
        return Urls(direct_dsn, direct_dsn)
    bouncer = request.getfixturevalue("bouncer")
    return Urls(bouncer.dsn(database), direct_dsn)


@pytest.fixture
async def site() -> AsyncIterator[Site]:
    """A real HTTP server on 127.0.0.1 that serves what the test adds to it."""
    async with Site() as s:
        yield s


@pytest.fixture
def make_settings(urls: Urls) -> Callable[..., Settings]:
    """Settings for tests: fast polls and leases, overridable per test."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": urls.work,
            "listen_database_url": urls.direct,
            "poll_interval": timedelta(seconds=0.2),
            "heartbeat_interval": timedelta(seconds=0.2),
            "lease": timedelta(seconds=5),
            "retry_base": timedelta(milliseconds=10),
            "shutdown_grace": timedelta(seconds=2),
        }
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture
async def pool(urls: Urls, settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    pool = await connections.create_pool(urls.work, settings, size=6)
    yield pool
    await pool.close()
