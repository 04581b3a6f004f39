"""The worker's optional HTTP endpoint: Prometheus `/metrics` and a `/health` check.

Served by aiohttp on the worker's own event loop (no thread, no second framework). Both
handlers talk to the database through the pool with a short timeout, so a scrape or a health
probe can never hang on an unreachable database.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

import asyncpg
from aiohttp import web

from . import connections
from .errors import CONNECTION_ERRORS, describe
from .metrics import CONTENT_TYPE
from .sql import q

if TYPE_CHECKING:
    from .engine import JobLoop
    from .listener import Listener

log = logging.getLogger(__name__)

DB_CHECK_TIMEOUT = 2.0  # seconds; container health checks allow a few more
DEPTH_MAX_AGE = 1.0  # seconds: scrapes closer together reuse the last queue depth


class Endpoint:
    """`GET /metrics` and `GET /health` for one worker; start() returns the bound port."""

    def __init__(self, worker: JobLoop, listener: Listener | None) -> None:
        self._worker = worker
        self._listener = listener
        self._runner: web.AppRunner | None = None
        self._depth_at = 0.0

    async def start(self, host: str, port: int) -> int:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/health", self._health)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound = self._runner.addresses[0][1]
        log.info("metrics on http://%s:%d/metrics, health check on /health", host, bound)
        return int(bound)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _metrics(self, _request: web.Request) -> web.Response:
        if time.monotonic() - self._depth_at >= DEPTH_MAX_AGE:
            try:
                rows = await self._query("queue_depth")
            except (TimeoutError, asyncpg.PostgresError, *CONNECTION_ERRORS):
                pass  # the last known depth stays; listener_up and the logs tell the story
            else:
                self._worker.metrics.set_queue_depth({r["state"]: r["n"] for r in rows})
                self._depth_at = time.monotonic()
        return web.Response(
            body=self._worker.metrics.render(), headers={"Content-Type": CONTENT_TYPE}
        )

    async def _health(self, _request: web.Request) -> web.Response:
        """200 only when the database answers, the listener is live (or not needed), and
        the worker is not shutting down; the body says which part is not."""
        problems: list[str] = []
        try:
            await self._query("ping")
            database = "ok"
        except (TimeoutError, asyncpg.PostgresError, *CONNECTION_ERRORS) as exc:
            database = describe(exc) if not isinstance(exc, TimeoutError) else "timed out"
            problems.append(f"database: {database}")
        listener = self._listener.state if self._listener is not None else "none"
        if listener not in ("listening", "none"):
            problems.append(f"listener {listener}")
        if self._worker.stopping.is_set():
            problems.append("worker stopping")
        body: dict[str, Any] = {
            "status": "ok" if not problems else "unhealthy",
            "problems": problems,
            "owner": self._worker.owner,
            "database": database,
            "listener": listener,
            "running": len(self._worker.running),
            "claimed": self._worker.claimed,
        }
        return web.json_response(body, status=200 if not problems else 503)

    async def _query(self, name: str) -> list[asyncpg.Record]:
        worker = self._worker
        async with asyncio.timeout(DB_CHECK_TIMEOUT):
            async with connections.pooled_transaction(
                worker.pool, worker.settings, durable=False
            ) as conn:
                return await conn.fetch(q(name))
