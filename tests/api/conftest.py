"""Shared fixtures for the HTTP API's tests: the real application (build_app, with its
auth and error middlewares) on 127.0.0.1, over a real PostgreSQL reached directly and
through PgBouncer (the integration tier's `urls`), a real in-process worker, keys made the
way `api-key create` makes them, and the local fixture site.

    async def test_x(api, worker, site, make_key):
        key = await make_key("tenant", "acme")
        async with api.post("/api/v3/sitemap/scan", {"domain": site.url("/")}, key=key) as r:
            ...
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web

from tests.integration.conftest import make_settings, pool, settings, site, urls  # noqa: F401
from worker import connections
from worker.api.app import build_app
from worker.api.keys import KeyKind, create_key
from worker.database_urls import Urls
from worker.runner import serve as run_worker
from worker.settings import Settings

TERMINAL = ("completed", "failed", "cancelled")


@dataclass
class Api:
    """A running server and one client session; `key` on each call sends it as Bearer."""

    url: str
    app: web.Application
    http: aiohttp.ClientSession
    headers: dict[str, str] = field(default_factory=dict)

    def _headers(self, key: str | None, extra: dict[str, str] | None) -> dict[str, str]:
        headers = dict(self.headers)
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        headers.update(extra or {})
        return headers

    def get(
        self, path: str, *, key: str | None = None, headers: dict[str, str] | None = None, **kw: Any
    ) -> Any:
        return self.http.get(self.url + path, headers=self._headers(key, headers), **kw)

    def post(
        self,
        path: str,
        body: Any = None,
        *,
        key: str | None = None,
        headers: dict[str, str] | None = None,
        data: bytes | str | None = None,
    ) -> Any:
        payload = data if data is not None else (None if body is None else json.dumps(body))
        hdrs = {"Content-Type": "application/json", **self._headers(key, headers)}
        return self.http.post(self.url + path, data=payload, headers=hdrs)

    def request(self, method: str, path: str, *, key: str | None = None, **kw: Any) -> Any:
        return self.http.request(method, self.url + path, headers=self._headers(key, None), **kw)

    async def json(self, method: str, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        """(status, parsed JSON body) of one call."""
        call = self.post(path, body, **kw) if method == "POST" else self.get(path, **kw)
        async with call as response:
            return response.status, await response.json()

    async def wait_status(
        self,
        status_url: str,
        statuses: tuple[str, ...] = TERMINAL,
        *,
        key: str | None = None,
        timeout: float = 30.0,
    ) -> dict[str, Any]:
        """Follow a status_url until the job is in one of `statuses` (polls the API itself:
        that is what a client does; the interval is the client's, not a wait for time)."""
        async with asyncio.timeout(timeout):
            while True:
                code, body = await self.json("GET", status_url, key=key)
                assert code == 200, body
                if body["status"] in statuses:
                    return body
                await asyncio.sleep(0.05)


@pytest.fixture
def api_settings(make_settings: Callable[..., Settings]) -> Settings:  # noqa: F811
    """Fast polls and leases; the scanner may reach the local fixture site."""
    return make_settings(allow_private_networks=True, fetch_per_host_delay=timedelta(0))


@pytest.fixture
async def api_pool(urls: Urls, api_settings: Settings) -> AsyncIterator[asyncpg.Pool]:  # noqa: F811
    p = await connections.create_pool(urls.work, api_settings, size=8)
    yield p
    await p.close()


@pytest.fixture
async def start_api(
    api_pool: asyncpg.Pool,
    api_settings: Settings,
    urls: Urls,  # noqa: F811
) -> AsyncIterator[Callable[..., Awaitable[Api]]]:
    """Start (another) server: `await start_api(open_on_loopback=False)`; all are stopped
    at the end of the test."""
    runners: list[web.AppRunner] = []
    sessions: list[aiohttp.ClientSession] = []

    async def start(*, open_on_loopback: bool = True, **settings_overrides: Any) -> Api:
        server_settings = api_settings.model_copy(update=settings_overrides)
        app = build_app(
            api_pool, server_settings, open_on_loopback=open_on_loopback, listen_dsn=urls.direct
        )
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        runners.append(runner)
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        http = aiohttp.ClientSession()
        sessions.append(http)
        return Api(f"http://127.0.0.1:{runner.addresses[0][1]}", app, http)

    yield start
    for http in sessions:
        await http.close()
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def api(start_api: Callable[..., Awaitable[Api]]) -> Api:
    """The server as `serve` runs it on loopback (open while the database has no key)."""
    return await start_api()


@pytest.fixture
def make_key(direct: asyncpg.Connection) -> Callable[..., Awaitable[str]]:
    """`await make_key("tenant", "acme")` -> a live key (as `api-key create` makes it)."""

    async def make(kind: KeyKind = "tenant", tenant: str | None = None, name: str = "") -> str:
        return (await create_key(direct, kind, tenant, name)).key

    return make


@pytest.fixture
async def worker(urls: Urls, api_settings: Settings) -> AsyncIterator[None]:  # noqa: F811
    """A real JobLoop in this process (the same runner `serve --with-worker` starts)."""
    stop = asyncio.Event()
    task = asyncio.create_task(
        run_worker(urls, api_settings, concurrency=4, handle_signals=False, stop=stop)
    )
    yield
    stop.set()
    await asyncio.wait_for(task, 15)
