"""Recurring scans without cron: every worker runs this tick every few seconds.

A domain with a `rescan_interval` is due at `next_scan_at` (set and jittered by the
domains_schedule trigger, moved on by each scan's end). The tick is one short transaction
through the pooled connections: sitemap_worker_enqueue_due_scans locks due domain rows with
FOR UPDATE SKIP LOCKED, inserts one sitemap_scan per domain that has no scan pending or
running, and moves next_scan_at on before it commits. So however many workers tick at the
same moment, each due time is taken by one of them, and a worker that dies mid-tick rolls
its transaction back for the next tick (of any worker) to take.
"""

from __future__ import annotations

import asyncio
import logging
import random

import asyncpg

from .. import connections
from ..settings import Settings
from ..sql import q

log = logging.getLogger(__name__)

TICK = 5.0  # seconds between a worker's ticks, ±20% so that workers do not tick in step
BATCH = 100  # domains per transaction: a backlog of due domains is taken in short steps


async def enqueue_due(pool: asyncpg.Pool, settings: Settings, limit: int = BATCH) -> list[int]:
    """One transaction: the due domains' scans (at most `limit`); the new job ids."""
    async with connections.pooled_transaction(pool, settings) as conn:
        rows = await conn.fetch(q("enqueue_due_scans"), limit)
    return [r["job_id"] for r in rows]


async def run_schedule(
    pool: asyncpg.Pool, settings: Settings, stopping: asyncio.Event, every: float = TICK
) -> None:
    """Tick until `stopping` is set. A database error is logged (once per outage) and the
    next tick tries again: the schedule never stops the worker."""
    failing = False
    while not stopping.is_set():
        try:
            while len(jobs := await enqueue_due(pool, settings)) == BATCH:
                log.info("enqueued %d recurring scan(s); more are due", len(jobs))
            if jobs:
                log.info("enqueued %d recurring scan(s)", len(jobs))
            if failing:
                log.info("recurring scans: the schedule runs again")
            failing = False
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
            if not failing:
                log.warning("recurring scans: the schedule's tick failed (%s); retrying", exc)
            failing = True
        try:
            await asyncio.wait_for(stopping.wait(), every * random.uniform(0.8, 1.2))
        except TimeoutError:
            pass
