"""Waiting on real events instead of sleeping: job status changes arrive on the status
channel, and each wait re-reads the row so a change before LISTEN is not missed."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import asyncpg

STATUS_CHANNEL = "sitemap_worker_status"


class StatusWatcher:
    """One LISTEN connection on the status channel for a whole test."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.events: list[tuple[int, str]] = []
        self._changed = asyncio.Event()

    @classmethod
    async def open(cls, dsn: str) -> StatusWatcher:
        watcher = cls(await asyncpg.connect(dsn))
        await watcher.conn.add_listener(STATUS_CHANNEL, watcher._on_notify)
        return watcher

    def _on_notify(self, _c: object, _pid: int, _channel: str, payload: str) -> None:
        import json

        data = json.loads(payload)
        self.events.extend((job_id, data["status"]) for job_id in data["ids"])
        self._changed.set()

    async def close(self) -> None:
        await self.conn.close()

    async def wait_for(
        self, job_ids: int | Iterable[int], statuses: str | Iterable[str], timeout: float = 15.0
    ) -> list[asyncpg.Record]:
        """Until every job is in one of `statuses`; returns their rows."""
        ids = [job_ids] if isinstance(job_ids, int) else list(job_ids)
        wanted = {statuses} if isinstance(statuses, str) else set(statuses)
        async with asyncio.timeout(timeout):
            while True:
                self._changed.clear()
                rows = await self.conn.fetch(
                    "SELECT * FROM jobs WHERE id = ANY($1::bigint[]) ORDER BY id", ids
                )
                if len(rows) == len(ids) and all(r["status"] in wanted for r in rows):
                    return rows
                await self._changed.wait()

    async def wait_until(self, sql: str, *args: object, timeout: float = 15.0) -> object:
        """Until `sql` (a single value) is truthy, re-checked on every status change."""
        async with asyncio.timeout(timeout):
            while True:
                self._changed.clear()
                value = await self.conn.fetchval(sql, *args)
                if value:
                    return value
                await self._changed.wait()
