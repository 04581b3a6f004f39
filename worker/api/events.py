"""GET /api/v3/events: server-sent events of job status changes, the caller's tenant only.

Stream format (text/event-stream):

    retry: 3000
    event: ready
    data: {"listening": true}

    event: status
    data: [{"job_id":41,"job_type":"sitemap_scan","status":"completed","progress":1.0,...}
    data: ,{"job_id":42,"job_type":"sitemap_scan","status":"failed","progress":0.5,...}
    data: ]

    : keepalive

`status` carries every job of the caller's tenant whose status changed during the last window
(about 250 ms), each once, as it is now: job_id, job_type, status, progress, tenant_id,
parent_id, attempts, updated_at, finished_at. Its data is a JSON list written one job per
`data:` line (an EventSource joins them with newlines: `JSON.parse(event.data)` works), so
no line grows with a burst. `resync` (data `{}`) says changes may have been missed
(the listener reconnected, or the client read too slowly): re-read what you show. A comment
line every 15 s keeps proxies from closing an idle stream.

The listener and the hub start with the first client (a server nobody watches holds no LISTEN
connection) and stop with the app."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

import asyncpg
from aiohttp import web

from .. import connections
from ..sql import q
from .events_hub import StatusHub, StatusListener
from .scope import POOL, SETTINGS, scope_of

log = logging.getLogger(__name__)

HEARTBEAT_S = 15.0
READY_WAIT_S = 5.0
# The direct (session) URL the listener uses; without it, the settings' listen URL.
LISTEN_DSN: web.AppKey[str] = web.AppKey("sitemap_worker_listen_dsn", str)


class EventService:
    """The hub, its task and its listener, started once on demand, stopped with the app."""

    def __init__(self, app: web.Application) -> None:
        self._app = app
        self._tasks: list[asyncio.Task[None]] = []
        self._start_lock = asyncio.Lock()
        self.hub = StatusHub(self._read_rows)
        self.listener: StatusListener | None = None
        self.heartbeat = HEARTBEAT_S

    async def _read_rows(self, ids: list[int]) -> list[asyncpg.Record]:
        async def read(conn: asyncpg.Connection) -> list[asyncpg.Record]:
            return list(await conn.fetch(q("api_status_rows"), ids))

        return await connections.pooled_transaction_to_end(
            self._app[POOL], self._app[SETTINGS], read, durable=False
        )

    def listen_dsn(self) -> str | None:
        dsn = self._app.get(LISTEN_DSN)
        return dsn if dsn is not None else self._app[SETTINGS].listen_url

    async def ensure_started(self) -> StatusListener:
        async with self._start_lock:
            if self.listener is None:
                dsn = self.listen_dsn()
                if dsn is None:
                    raise RuntimeError("no database URL to LISTEN on")
                listener = StatusListener(
                    dsn, self._app[SETTINGS], self.hub.on_status, self.hub.on_connect
                )
                self._tasks = [
                    asyncio.create_task(listener.run(), name="api-status-listener"),
                    asyncio.create_task(self.hub.run(), name="api-status-hub"),
                ]
                self.listener = listener
            return self.listener

    async def stop(self) -> None:
        """Ends every open stream, then the listener and the hub."""
        self.hub.close_all()
        if self.listener is not None:
            await self.listener.stop()
        for task in self._tasks:
            if task.get_name() == "api-status-hub":
                task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks)
        self._tasks = []


EVENTS: web.AppKey[EventService] = web.AppKey("sitemap_worker_events", EventService)


def add_routes(app: web.Application) -> None:
    app[EVENTS] = EventService(app)
    app.router.add_get("/api/v3/events", events)
    app.on_shutdown.append(_stop)  # before aiohttp waits for handlers: streams end here


async def _stop(app: web.Application) -> None:
    await app[EVENTS].stop()


def frame(event: str, data: str) -> bytes:
    return f"event: {event}\ndata: {data}\n\n".encode()


def status_frame(rows: list[str]) -> bytes:
    """One `status` event, one job per `data:` line: a client joins data lines with a newline
    (the SSE rule), which gives the JSON list back, and no line grows with the burst."""
    lines = "\ndata: ,".join(rows)
    return f"event: status\ndata: [{lines}\ndata: ]\n\n".encode()


async def events(request: web.Request) -> web.StreamResponse:
    """Server-sent events of job status changes (text/event-stream), the caller's tenant only."""
    scope = scope_of(request)
    service = request.app[EVENTS]
    listener = await service.ensure_started()
    feed = service.hub.subscribe(scope)
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-cache, no-transform",
            "X-Accel-Buffering": "no",  # nginx: do not buffer the stream
        }
    )
    try:
        await response.prepare(request)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(READY_WAIT_S):
                await listener.listening.wait()
        ready = json.dumps({"listening": listener.listening.is_set()})
        await response.write(b"retry: 3000\n" + frame("ready", ready))
        while not feed.closed:
            try:
                async with asyncio.timeout(service.heartbeat):
                    await feed.ready.wait()
            except TimeoutError:
                await response.write(b": keepalive\n\n")
                continue
            rows, resync = feed.take()
            if feed.closed:
                break
            out = frame("resync", "{}") if resync else b""
            if rows:
                out += status_frame(rows)
            if out:
                await response.write(out)
    except (ConnectionResetError, ConnectionError):
        pass  # the client went away: nothing to tell anyone
    finally:
        service.hub.unsubscribe(feed)
    return response
