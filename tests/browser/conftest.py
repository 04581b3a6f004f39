"""Browser tests: Debian's Chromium driven through its chromedriver by selenium, against the
real application (build_app: the API, its auth and event stream, the dashboard) and a real
worker, on 127.0.0.1 over a real, migrated database. Nothing is downloaded at run time:
the browser and its driver come from apt, and Selenium Manager is switched off.

Selenium's calls block, so the server, the worker and the test site live on an event loop
in a thread of their own (`ServerThread`); the tests are plain functions."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiohttp import web

from tests.support.sites import Site
from worker import connections
from worker.api.app import build_app
from worker.engine import JobLoop
from worker.jobs.registry import default_registry
from worker.settings import Settings

T = TypeVar("T")

CHROMIUM = os.environ.get("SITEMAP_WORKER_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("SITEMAP_WORKER_CHROMEDRIVER", "/usr/bin/chromedriver")
MISSING = (
    "chromium, chromium-driver or selenium is missing (apt-get install chromium "
    "chromium-driver; pip install selenium): the browser tests were skipped"
)
REQUIRE_ENV = "SITEMAP_WORKER_REQUIRE_BROWSER"
ARTIFACTS = Path(os.environ.get("SITEMAP_WORKER_ARTIFACTS") or Path(__file__).parent / "artifacts")
WAIT_S = 30


def browser_missing() -> bool:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return True
    return not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK))


def browser_required() -> bool:
    """CI must run the browser tests: there missing tools fail instead of skipping."""
    return bool(os.environ.get(REQUIRE_ENV) or os.environ.get("CI"))


def require_browser() -> None:
    """Skip the calling test when the browser tools are absent (fail where required)."""
    if browser_missing():
        if browser_required():
            pytest.fail(f"{MISSING}, and {REQUIRE_ENV} or CI requires them")
        pytest.skip(MISSING)


class ServerThread:
    """An event loop in a thread: the server side of a browser test runs here."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, work: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(work, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@dataclass
class LiveServer:
    """What a test drives: the dashboard's address, the test site, the server's loop."""

    base: str
    site: Site
    thread: ServerThread
    dsn: str
    pool: Any

    def url(self, path: str) -> str:
        return self.base + path

    def sql(self, statement: str, *args: Any) -> Any:
        """One statement on the server's pool (fetch), from the test's thread."""

        async def go() -> Any:
            async with self.pool.acquire() as conn:
                return await conn.fetch(statement, *args)

        return self.thread.run(go())


@pytest.fixture
def live_server(direct_dsn: str) -> Iterator[LiveServer]:
    require_browser()  # no server for a test that cannot run anyway
    thread = ServerThread()
    settings = Settings(
        database_url=direct_dsn,
        poll_interval=timedelta(seconds=0.2),
        heartbeat_interval=timedelta(seconds=0.2),
        lease=timedelta(seconds=5),
        shutdown_grace=timedelta(seconds=2),
        allow_private_networks=True,
    )
    state: dict[str, Any] = {}

    async def start() -> LiveServer:
        pool = await connections.create_pool(direct_dsn, settings, size=6)
        app = build_app(pool, settings, open_on_loopback=True, listen_dsn=direct_dsn)
        runner = web.AppRunner(app, shutdown_timeout=1)
        await runner.setup()
        tcp = web.TCPSite(runner, "127.0.0.1", 0)
        await tcp.start()
        port = tcp._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        site = Site()
        await site.__aenter__()
        loop = JobLoop(pool, settings, default_registry(), concurrency=4)
        state.update(pool=pool, runner=runner, site=site, loop=loop)
        state["task"] = asyncio.ensure_future(loop.run())
        return LiveServer(f"http://127.0.0.1:{port}", site, thread, direct_dsn, pool)

    async def stop() -> None:
        state["loop"].request_stop()
        await asyncio.wait_for(state["task"], 15)
        await state["runner"].cleanup()
        await state["site"].__aexit__(None, None, None)
        await state["pool"].close()

    try:
        yield thread.run(start())
    finally:
        if state:
            thread.run(stop())
        thread.close()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """A fresh headless Chromium; nothing of it is downloaded (SE_OFFLINE)."""
    require_browser()
    os.environ["SE_OFFLINE"] = "true"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = Path(tempfile.mkdtemp(prefix="swchrome-", dir="/tmp"))
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1200,1000",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def screenshot(driver: Any, name: str) -> Path:
    """Save the whole page as a test artifact (tests/browser/artifacts/, git-ignored, or
    $SITEMAP_WORKER_ARTIFACTS)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    height = driver.execute_script("return document.documentElement.scrollHeight")
    width = driver.get_window_size()["width"]
    driver.set_window_size(width, min(max(int(height) + 140, 600), 4000))
    driver.save_screenshot(str(path))
    return path
