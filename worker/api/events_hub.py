"""The status hub: one LISTEN connection per server process, fanned out to every SSE client.

Notifications on the status channel only name ids. The hub gathers the ids that changed during
a short window, reads their current state in ONE pooled query per window, and offers each
client the rows of its own tenant. A client's feed keeps only the latest row per job, so a
burst of 10,000 completions is one message per client per window, and a slow client costs at
most `backlog` rows (past that it is told to resync instead)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from ..listener import WAKEUP_CHANNEL, Listener
from ..settings import Settings
from ..waiting import STATUS_CHANNEL
from .scope import Scope

log = logging.getLogger(__name__)

WINDOW_S = 0.25
CLIENT_BACKLOG = 20_000
MAX_PENDING_IDS = 200_000


class StatusListener(Listener):
    """The worker's supervised listener (reconnect with backoff, idle probe), listening on the
    status channel instead of the wake-up channel, and handing each payload on."""

    def __init__(
        self,
        dsn: str,
        settings: Settings,
        on_status: Callable[[str], None],
        on_connect: Callable[[], None],
    ) -> None:
        super().__init__(dsn, settings, on_notify=lambda: None, on_connect=on_connect)
        self._on_status = on_status

    async def _connect(self) -> None:
        await super()._connect()
        assert self._conn is not None
        await self._conn.remove_listener(WAKEUP_CHANNEL, self._notification)
        await self._conn.add_listener(STATUS_CHANNEL, self._status)

    def _status(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        self._last_heard = time.monotonic()  # a notification proves the connection too
        self._on_status(payload)


class ClientFeed:
    """One client's pending rows, latest per job; `ready` is set when there is something to send."""

    def __init__(self, scope: Scope, backlog: int = CLIENT_BACKLOG) -> None:
        self.scope = scope
        self.ready = asyncio.Event()
        self.closed = False
        self._backlog = backlog
        self._latest: dict[int, str] = {}
        self._resync = False

    def offer(self, rows: list[tuple[int, str]]) -> None:
        for job_id, text in rows:
            self._latest[job_id] = text
        if len(self._latest) > self._backlog:
            self.resync()
        elif rows:
            self.ready.set()

    def resync(self) -> None:
        """What was missed is too much (or unknown): drop it and tell the client to re-read."""
        self._latest.clear()
        self._resync = True
        self.ready.set()

    def close(self) -> None:
        self.closed = True
        self.ready.set()

    def take(self) -> tuple[list[str], bool]:
        """Everything pending, and whether the client must resync first; empties the feed."""
        rows, resync = list(self._latest.values()), self._resync
        self._latest, self._resync = {}, False
        self.ready.clear()
        return rows, resync


ReadRows = Callable[[list[int]], Awaitable[list[asyncpg.Record]]]


class StatusHub:
    """Collects changed ids from notifications and fans their current rows out, per window."""

    def __init__(self, read_rows: ReadRows, *, window: float = WINDOW_S) -> None:
        self._read_rows = read_rows
        self._window = window
        self._feeds: set[ClientFeed] = set()
        self._pending: set[int] = set()
        self._changed = asyncio.Event()
        self._connected_before = False
        self.windows = 0  # windows read and sent so far (for tests and logs)

    def subscribe(self, scope: Scope) -> ClientFeed:
        feed = ClientFeed(scope)
        self._feeds.add(feed)
        return feed

    def unsubscribe(self, feed: ClientFeed) -> None:
        self._feeds.discard(feed)

    @property
    def clients(self) -> int:
        return len(self._feeds)

    def on_status(self, payload: str) -> None:
        """The listener's callback: `{"status": ..., "ids": [...]}`. Only the ids matter."""
        try:
            ids = [int(i) for i in json.loads(payload)["ids"]]
        except (ValueError, KeyError, TypeError):
            log.warning("status notification not understood: %.200s", payload)
            return
        if not self._feeds:
            return  # nobody to tell: no read at all
        self._pending.update(ids)
        if len(self._pending) > MAX_PENDING_IDS:
            self._pending.clear()
            self._resync_all()
        self._changed.set()

    def on_connect(self) -> None:
        """After a reconnect, notifications sent meanwhile are lost: clients must re-read."""
        if self._connected_before:
            self._resync_all()
        self._connected_before = True

    def _resync_all(self) -> None:
        for feed in self._feeds:
            feed.resync()

    def close_all(self) -> None:
        for feed in list(self._feeds):
            feed.close()

    async def run(self) -> None:
        """Forever: wait for a change, let the window fill, one read, fan out."""
        failures = 0
        while True:
            await self._changed.wait()
            await asyncio.sleep(self._window)  # the coalescing window, not a poll
            self._changed.clear()
            ids, self._pending = sorted(self._pending), set()
            if not ids or not self._feeds:
                continue
            try:
                rows = await self._read_rows(ids)
            except Exception as exc:  # a database outage: keep the ids and try again
                failures += 1
                if failures == 1:
                    log.warning("event hub cannot read job states: %s", exc)
                self._pending.update(ids)
                self._changed.set()
                await asyncio.sleep(min(0.25 * 2**failures, 5.0))
                continue
            failures = 0
            self.windows += 1
            self._fan_out(rows)

    def _fan_out(self, rows: list[asyncpg.Record]) -> None:
        everyone: list[tuple[int, str]] = []
        by_tenant: dict[str | None, list[tuple[int, str]]] = {}
        for row in rows:
            item = (row["id"], json.dumps(event_row(row), separators=(",", ":")))
            everyone.append(item)
            by_tenant.setdefault(row["tenant_id"], []).append(item)
        for feed in self._feeds:
            tenant = feed.scope.tenant_id
            feed.offer(everyone if tenant is None else by_tenant.get(tenant, []))


def event_row(row: asyncpg.Record) -> dict[str, Any]:
    """One job in a `status` event: its state now (which may be newer than the change that
    woke the hub)."""
    return {
        "job_id": row["id"],
        "job_type": row["job_type"],
        "status": row["status"],
        "progress": row["progress"],
        "tenant_id": row["tenant_id"],
        "parent_id": row["parent_id"],
        "attempts": row["attempts"],
        "updated_at": row["updated_at"].isoformat(),
        "finished_at": row["finished_at"].isoformat() if row["finished_at"] else None,
    }
