"""A dashboard served by a real aiohttp server on 127.0.0.1 over a real, migrated database.
Until the API's build_app is wired, the app is the dashboard's routes behind a middleware
that sets the Scope the test asks for (the auth rules themselves are the API's tests)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from worker import connections
from worker.api.scope import POOL, SCOPE, SETTINGS, Scope
from worker.dashboard import add_routes
from worker.settings import Settings

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Dashboard:
    """The running server, and the Scope its next requests get."""

    def __init__(self, server: TestServer, session: aiohttp.ClientSession) -> None:
        self.server = server
        self.session = session
        self.scope = Scope(tenant_id=None, admin=True)

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))

    async def get(self, path: str) -> tuple[int, str]:
        async with self.session.get(self.url(path)) as response:
            return response.status, await response.text()

    async def get_no_redirect(self, path: str) -> tuple[int, str, str]:
        """A GET that does not follow a redirect: (status, Location, body)."""
        async with self.session.get(self.url(path), allow_redirects=False) as r:
            return r.status, r.headers.get("Location", ""), await r.text()

    async def post(self, path: str, data: dict[str, str]) -> tuple[int, str, str]:
        async with self.session.post(self.url(path), data=data, allow_redirects=False) as r:
            return r.status, r.headers.get("Location", ""), await r.text()


@pytest.fixture(params=["direct", "pgbouncer"])
def dash_dsn(request: pytest.FixtureRequest, direct_dsn: str, database: str) -> str:
    """The pages' pool: straight to PostgreSQL, and through PgBouncer in transaction mode."""
    if request.param == "direct":
        return direct_dsn
    return str(request.getfixturevalue("bouncer").dsn(database))


@pytest.fixture
def dash_settings(dash_dsn: str) -> Settings:
    return Settings(
        database_url=dash_dsn,
        poll_interval=timedelta(seconds=0.2),
        heartbeat_interval=timedelta(seconds=0.2),
        lease=timedelta(seconds=5),
    )


@pytest.fixture
async def dash_pool(dash_dsn: str, dash_settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    pool = await connections.create_pool(dash_dsn, dash_settings, size=4)
    yield pool
    await pool.close()


@pytest.fixture
async def dashboard(dash_pool: asyncpg.Pool, dash_settings: Settings) -> AsyncIterator[Dashboard]:
    holder: list[Dashboard] = []

    @web.middleware
    async def set_scope(request: web.Request, handler: Handler) -> web.StreamResponse:
        request[SCOPE] = holder[0].scope
        return await handler(request)

    app = web.Application(middlewares=[set_scope])
    app[POOL] = dash_pool
    app[SETTINGS] = dash_settings
    add_routes(app)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    async with aiohttp.ClientSession() as session:
        holder.append(Dashboard(server, session))
        yield holder[0]
    await server.close()
