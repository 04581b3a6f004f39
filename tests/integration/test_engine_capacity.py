"""A worker holds a job until its outcome is written: it never holds more jobs than its
concurrency, however slowly the outcome writes go, and it keeps the lease of every job it
holds, also while the job waits for its outcome write. A stop still ends within the grace.

The slow write is made the way the issue met it: a statement trigger on the jobs that end
(there, the batch trigger waiting for the parent row while many workers finished one
batch's children), here one that waits for an advisory lock the test holds. By then the
statement has locked its rows, as the real one had."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import timedelta

import asyncpg
import pytest

from tests.support.locks import until_a_statement_waits_on_a_lock
from tests.support.status_gate import gate_closed, install_gate
from worker.engine import JobLoop
from worker.jobs.registry import default_registry

CONCURRENCY = 2
LEASE = 1.0  # seconds: short, so that an unrenewed lease visibly runs out


@pytest.fixture
def settings(make_settings):
    return make_settings(
        lease=timedelta(seconds=LEASE),
        heartbeat_interval=timedelta(seconds=0.1),
        poll_interval=timedelta(seconds=0.1),
    )


async def jobs(direct: asyncpg.Connection, seconds: list[float]) -> list[int]:
    """Noop jobs, the first ones claimed first (priority), each holding for `seconds[i]`."""
    return [
        await direct.fetchval(
            "INSERT INTO jobs (job_type, payload, priority) VALUES ('noop', $1::jsonb, $2) RETURNING id",
            json.dumps({"seconds": s}),
            len(seconds) - i,
        )
        for i, s in enumerate(seconds)
    ]


async def test_slow_outcome_writes_hold_slots_and_keep_leases(
    pool, settings, direct, direct_dsn, caplog
):
    # Job 0 ends at once: its write waits at the gate. Job 1 ends a little later: its
    # outcome waits behind that write, unwritten, for several leases.
    ids = await jobs(direct, [0, 0.3] + [0] * 10)
    await install_gate(direct)
    worker = JobLoop(pool, settings, default_registry(), concurrency=CONCURRENCY)
    caplog.set_level(logging.INFO, logger="worker")
    async with gate_closed(direct_dsn):
        task = asyncio.create_task(worker.run())
        await until_a_statement_waits_on_a_lock(direct, "%sitemap_worker_complete%")
        blocked_at = await direct.fetchval("SELECT now()")
        # Job 1's lease, renewed while its outcome waits, reaches three leases past the
        # block; without renewals it would stay where its claim put it.
        async with asyncio.timeout(15):
            while True:
                owned = await direct.fetch(
                    "SELECT id, lease_expires_at FROM jobs WHERE owner = $1", worker.owner
                )
                assert len(owned) <= CONCURRENCY, owned
                assert worker.claimed <= CONCURRENCY
                # What another worker's claim could take: an expired lease, not locked by
                # a write of ours in flight.
                assert not await direct.fetchval(
                    "SELECT count(*) FROM (SELECT id FROM jobs WHERE owner = $1"
                    " AND lease_expires_at < now() FOR UPDATE SKIP LOCKED) claimable",
                    worker.owner,
                )
                lease = next((r["lease_expires_at"] for r in owned if r["id"] == ids[1]), None)
                assert lease is not None, "job 1 is no longer ours"
                if lease > blocked_at + timedelta(seconds=3 * LEASE):
                    break
                await asyncio.sleep(0.05)
        assert await direct.fetchval("SELECT count(*) FROM jobs WHERE status = 'pending'") == 10
    # The gate opens: everything completes, each job once, at its first attempt.
    async with asyncio.timeout(20):
        while await direct.fetchval("SELECT count(*) FROM jobs WHERE status <> 'completed'"):
            await asyncio.sleep(0.05)
    worker.request_stop()
    await asyncio.wait_for(task, 10)
    rows = await direct.fetch("SELECT attempts FROM jobs")
    assert [r["attempts"] for r in rows] == [1] * len(ids)
    assert not [r for r in caplog.records if "not written" in r.getMessage()]


async def test_stop_ends_within_the_grace_while_outcome_writes_are_blocked(
    pool, make_settings, direct, direct_dsn, caplog
):
    settings = make_settings(
        shutdown_grace=timedelta(seconds=2), heartbeat_interval=timedelta(seconds=0.1)
    )
    await jobs(direct, [0, 60])
    await install_gate(direct)
    worker = JobLoop(pool, settings, default_registry(), concurrency=CONCURRENCY)
    async with gate_closed(direct_dsn):
        task = asyncio.create_task(worker.run())
        await until_a_statement_waits_on_a_lock(direct, "%sitemap_worker_complete%")
        began = time.monotonic()
        worker.request_stop()
        done, _ = await asyncio.wait([task], timeout=settings.shutdown_grace.total_seconds() + 0.2)
        took = time.monotonic() - began
        assert done, f"run() still going {took:.1f} s after the stop, with a 2 s grace"
        assert took <= 2.0, took
        assert "job outcome(s) not written" in caplog.text
    if not task.done():
        await asyncio.wait_for(task, 60)
