"""`sitemap-worker serve`: the API and the dashboard on one address, optionally with a
worker in the same process (`--with-worker`: on the embedded default, the whole system).

A server answers without a key only while the database has none AND it is bound to
loopback: bound to any other address with no key, it refuses to start and says why."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from .. import connections
from ..cli_errors import CliError
from ..database_urls import Urls
from ..runner import install_stop_signals, remove_stop_signals
from ..settings import Settings
from .app import build_app
from .auth import is_loopback, keys_exist

log = logging.getLogger(__name__)

API_POOL_SIZE = 10


def refusal(host: str, have_keys: bool) -> str | None:
    """Why `serve` must not start on `host`, or None when it may."""
    if have_keys or is_loopback(host):
        return None
    return (
        f"refusing to serve on {host} with no API key in the database: anyone who can reach "
        "it could submit and cancel jobs. Create a key first (`sitemap-worker api-key create "
        "--tenant T` or `--admin`), or bind to 127.0.0.1"
    )


async def serve(
    urls: Urls,
    settings: Settings,
    *,
    host: str,
    port: int,
    with_worker: bool = False,
    concurrency: int | None = None,
    stop: asyncio.Event | None = None,
    handle_signals: bool = True,
) -> None:
    """Serve until a signal (or `stop`); with_worker also runs the worker's job loop."""
    pool = await connections.create_pool(urls.work, settings, size=API_POOL_SIZE)
    runner: web.AppRunner | None = None
    stop = stop or asyncio.Event()
    worker_task: asyncio.Task[object] | None = None
    try:
        problem = refusal(host, await keys_exist(pool, settings))
        if problem:
            raise CliError(problem)
        app = build_app(pool, settings, open_on_loopback=is_loopback(host), listen_dsn=urls.direct)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            raise CliError(f"cannot serve on {host}:{port}: {exc.strerror or exc}") from None
        print(f"serving on {_address(runner, host, port)} (API docs: /api/docs)", flush=True)
        if handle_signals:
            install_stop_signals(stop.is_set, stop.set)
        if with_worker:
            from ..runner import serve as run_worker

            worker_task = asyncio.create_task(
                run_worker(
                    urls, settings, concurrency=concurrency, handle_signals=False, stop=stop
                ),
                name="worker",
            )
        waits: list[asyncio.Future[object]] = [asyncio.ensure_future(stop.wait())]
        if worker_task is not None:
            waits.append(worker_task)
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.set()
        if handle_signals:
            remove_stop_signals()
        if worker_task is not None:
            await asyncio.wait([worker_task])
        if runner is not None:
            await runner.cleanup()
        await pool.close()
    if worker_task is not None and worker_task.exception() is not None:
        worker_task.result()


def _address(runner: web.AppRunner, host: str, port: int) -> str:
    """The address really bound (port 0 picks one)."""
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            port = int(address[1])
            break
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"
