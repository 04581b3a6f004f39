"""The job engine against a real PostgreSQL, direct and through PgBouncer."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
from pydantic import BaseModel

from tests.support.waits import StatusWatcher
from worker.database_urls import Urls
from worker.engine import JobLoop
from worker.errors import RetryableJobError
from worker.jobs.registry import JobType, Registry, default_registry
from worker.listener import Listener
from worker.settings import Settings


async def insert(
    conn: asyncpg.Connection, job_type: str = "noop", payload: Any = None, **cols: Any
) -> int:
    names = ["job_type", "payload", *cols]
    values = [job_type, json.dumps(payload if payload is not None else {}), *cols.values()]
    marks = ", ".join(f"${i}" + ("::jsonb" if i == 2 else "") for i in range(1, len(names) + 1))
    return await conn.fetchval(
        f"INSERT INTO jobs ({', '.join(names)}) VALUES ({marks}) RETURNING id", *values
    )


@pytest.fixture
async def watcher(urls: Urls) -> AsyncIterator[StatusWatcher]:
    w = await StatusWatcher.open(urls.direct)
    yield w
    await w.close()


async def run_burst(
    pool: asyncpg.Pool, settings: Settings, registry: Registry | None = None, concurrency: int = 4
) -> JobLoop:
    worker = JobLoop(
        pool, settings, registry or default_registry(), concurrency=concurrency, burst=True
    )
    await asyncio.wait_for(worker.run(), timeout=30)
    return worker


class Empty(BaseModel):
    pass


async def test_noop_job_completes_with_timestamps(pool, settings, direct):
    job_id = await insert(direct, "noop", {"seconds": 0.01})
    worker = await run_burst(pool, settings)
    row = await direct.fetchrow("SELECT * FROM jobs WHERE id = $1", job_id)
    assert worker.claimed == 1
    assert row["status"] == "completed"
    assert row["progress"] == 1
    assert row["attempts"] == 1
    assert json.loads(row["result"]) == {"seconds": 0.01}
    assert row["started_at"] >= row["created_at"]
    assert row["finished_at"] >= row["started_at"]
    assert row["owner"] is None and row["lease_expires_at"] is None and row["error"] is None


async def test_claim_order_is_priority_then_run_at(pool, settings, direct):
    low = await insert(direct, priority=0)
    high = await insert(direct, priority=10)
    mid = await insert(direct, priority=5)
    await run_burst(pool, settings, concurrency=1)
    order = await direct.fetch("SELECT id FROM jobs ORDER BY started_at")
    assert [r["id"] for r in order] == [high, mid, low]


async def test_future_run_at_is_not_claimed(pool, settings, direct):
    job_id = await direct.fetchval(
        "INSERT INTO jobs (job_type, run_at) VALUES ('noop', now() + interval '1 hour') RETURNING id"
    )
    worker = await run_burst(pool, settings)
    assert worker.claimed == 0
    assert await direct.fetchval("SELECT status FROM jobs WHERE id = $1", job_id) == "pending"


@pytest.mark.parametrize(
    "payload, message",
    [
        ([1, 2], "expected a JSON object, got an array"),
        ({"seconds": "soon"}, "seconds: Input should be a valid number"),
        ({"seconds": -1}, "seconds: Input should be greater than or equal to 0"),
        ({"sleep": 1}, "sleep: Extra inputs are not permitted"),
    ],
)
async def test_invalid_payload_fails_at_once_and_worker_goes_on(
    pool, settings, direct, payload, message
):
    bad = await insert(direct, "noop", payload)
    good = await insert(direct, "noop", {})
    await run_burst(pool, settings)
    rows = {r["id"]: r for r in await direct.fetch("SELECT * FROM jobs")}
    assert rows[bad]["status"] == "failed"
    assert rows[bad]["attempts"] == 1  # permanent: no retry
    assert message in rows[bad]["error"] and rows[bad]["error"].startswith(
        "invalid payload for noop"
    )
    assert rows[bad]["finished_at"] is not None
    assert rows[good]["status"] == "completed"


async def test_unknown_job_type_fails_with_known_types(pool, settings, direct):
    job_id = await insert(direct, "sitemap_scna", {})
    await run_burst(pool, settings)
    row = await direct.fetchrow("SELECT status, error FROM jobs WHERE id = $1", job_id)
    assert row["status"] == "failed"
    assert row["error"].startswith("unknown job type 'sitemap_scna' (known types: noop")


async def test_transient_failure_retries_then_fails(pool, make_settings, direct):
    calls: list[int] = []

    async def flaky(ctx, payload):
        calls.append(ctx.job.attempts)
        raise RetryableJobError("upstream said 503", delay=0)

    registry = Registry([JobType("flaky", Empty, flaky)])
    job_id = await insert(direct, "flaky", {}, max_attempts=3)
    await run_burst(pool, make_settings(), registry)
    row = await direct.fetchrow("SELECT * FROM jobs WHERE id = $1", job_id)
    assert calls == [1, 2, 3]
    assert row["status"] == "failed"
    assert row["attempts"] == 3
    assert row["error"] == "upstream said 503"


async def test_retry_waits_for_backoff(pool, make_settings, direct):
    async def boom(ctx, payload):
        raise ConnectionResetError("peer reset")

    registry = Registry([JobType("boom", Empty, boom)])
    job_id = await insert(direct, "boom", {})
    await run_burst(pool, make_settings(retry_base=timedelta(minutes=5)), registry)
    row = await direct.fetchrow(
        "SELECT status, attempts, error, run_at - now() AS wait FROM jobs WHERE id = $1", job_id
    )
    assert row["status"] == "pending" and row["attempts"] == 1
    assert row["error"] == "ConnectionResetError: peer reset"
    assert timedelta(minutes=4) < row["wait"] < timedelta(minutes=6)


async def test_database_error_inside_phase_fails_job_and_pool_stays_healthy(pool, settings, direct):
    async def bad_sql(ctx, payload):
        await ctx.run_phase(lambda conn: conn.execute("SELECT 1 / 0"), progress=0.5)

    from worker.jobs.noop import NOOP

    registry = Registry([JobType("bad_sql", Empty, bad_sql), NOOP])
    failing = await insert(direct, "bad_sql", {})
    await run_burst(pool, settings, registry)
    row = await direct.fetchrow("SELECT * FROM jobs WHERE id = $1", failing)
    assert row["status"] == "failed"
    assert row["error"] == "database error 22012: division by zero"
    assert row["progress"] == 0  # the phase rolled back with its progress
    ok = await insert(direct, "noop", {})
    await run_burst(pool, settings, registry)
    assert await direct.fetchval("SELECT status FROM jobs WHERE id = $1", ok) == "completed"
    idle_in_tx = await direct.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE state LIKE 'idle in transaction%'"
    )
    assert idle_in_tx == 0


async def test_phase_writes_commit_with_progress(pool, settings, direct):
    await direct.execute("CREATE TABLE phase_log (job_id bigint, step int)")

    async def two_phases(ctx, payload):
        for step, progress in ((1, 0.5), (2, 0.9)):
            await ctx.run_phase(
                lambda conn, step=step: conn.execute(
                    "INSERT INTO phase_log VALUES ($1, $2)", ctx.job.id, step
                ),
                progress=progress,
            )
        return {"steps": 2}

    registry = Registry([JobType("two", Empty, two_phases)])
    job_id = await insert(direct, "two", {})
    await run_burst(pool, settings, registry)
    assert await direct.fetchval("SELECT count(*) FROM phase_log WHERE job_id = $1", job_id) == 2
    assert await direct.fetchval("SELECT status FROM jobs WHERE id = $1", job_id) == "completed"


async def test_result_that_cannot_be_stored_fails_only_that_job(pool, settings, direct):
    async def nul_result(ctx, payload):
        return {"text": "a\u0000b"} if ctx.job.id == bad else {"ok": True}

    registry = Registry([JobType("r", Empty, nul_result)])
    ids = [await insert(direct, "r", {}) for _ in range(5)]
    bad = ids[2]
    await run_burst(pool, settings, registry, concurrency=5)
    rows = {r["id"]: r for r in await direct.fetch("SELECT * FROM jobs")}
    assert rows[bad]["status"] == "failed"
    assert "could not store result" in rows[bad]["error"]
    assert all(rows[i]["status"] == "completed" for i in ids if i != bad)


async def test_cancelled_pending_job_never_starts(pool, settings, direct):
    job_id = await insert(direct)
    await direct.execute("UPDATE jobs SET status = 'cancelled' WHERE id = $1", job_id)
    worker = await run_burst(pool, settings)
    row = await direct.fetchrow("SELECT * FROM jobs WHERE id = $1", job_id)
    assert worker.claimed == 0
    assert row["status"] == "cancelled" and row["started_at"] is None
    assert row["finished_at"] is not None  # set by the trigger, also for psql users


async def test_cancel_running_job_stops_it_within_seconds(pool, settings, direct, watcher):
    job_id = await insert(direct, "noop", {"seconds": 60})
    worker = JobLoop(pool, settings, default_registry(), concurrency=1)
    task = asyncio.create_task(worker.run())
    await watcher.wait_for(job_id, "processing")
    await direct.execute("UPDATE jobs SET status = 'cancelled' WHERE id = $1", job_id)
    # The only slot is freed once the heartbeat (0.2 s in tests) notices: a new job runs.
    after = await insert(direct)
    await watcher.wait_for(after, "completed", timeout=5)
    worker.request_stop()
    await asyncio.wait_for(task, 10)
    row = await direct.fetchrow("SELECT * FROM jobs WHERE id = $1", job_id)
    assert row["status"] == "cancelled" and row["finished_at"] is not None and row["result"] is None


async def test_expired_lease_is_reclaimed_by_the_claim(pool, settings, direct):
    job_id = await insert(direct)
    await direct.execute(
        "UPDATE jobs SET status = 'processing', owner = 'dead-worker', attempts = 1,"
        " lease_expires_at = now() - interval '1 second' WHERE id = $1",
        job_id,
    )
    await run_burst(pool, settings)
    row = await direct.fetchrow("SELECT * FROM jobs WHERE id = $1", job_id)
    assert row["status"] == "completed" and row["attempts"] == 2


async def test_expired_lease_without_attempts_left_fails(pool, settings, direct):
    job_id = await insert(direct)
    await direct.execute(
        "UPDATE jobs SET status = 'processing', owner = 'dead-worker', attempts = 3,"
        " max_attempts = 3, lease_expires_at = now() - interval '1 second' WHERE id = $1",
        job_id,
    )
    await run_burst(pool, settings)
    row = await direct.fetchrow("SELECT * FROM jobs WHERE id = $1", job_id)
    assert row["status"] == "failed" and row["attempts"] == 3
    assert row["error"] == "worker lost while running (lease expired) on attempt 3 of 3"


async def test_live_lease_is_not_stolen(pool, settings, direct):
    job_id = await insert(direct)
    await direct.execute(
        "UPDATE jobs SET status = 'processing', owner = 'alive', attempts = 1,"
        " lease_expires_at = now() + interval '1 hour' WHERE id = $1",
        job_id,
    )
    worker = await run_burst(pool, settings)
    assert worker.claimed == 0
    assert await direct.fetchval("SELECT owner FROM jobs WHERE id = $1", job_id) == "alive"


async def test_shutdown_hands_unfinished_job_back_without_burning_an_attempt(
    pool, settings, direct, watcher
):
    job_id = await insert(direct, "noop", {"seconds": 60})
    worker = JobLoop(pool, settings, default_registry(), concurrency=2)
    task = asyncio.create_task(worker.run())
    await watcher.wait_for(job_id, "processing")
    worker.request_stop()
    await asyncio.wait_for(task, 5)
    row = await direct.fetchrow("SELECT * FROM jobs WHERE id = $1", job_id)
    assert row["status"] == "pending" and row["attempts"] == 0 and row["owner"] is None
    assert row["error"] == "released by a worker shutting down"


async def test_shutdown_lets_a_short_job_finish(pool, settings, direct, watcher):
    release = asyncio.Event()

    async def waits_for_test(ctx, payload):
        await release.wait()
        return {"done": True}

    registry = Registry([JobType("w", Empty, waits_for_test)])
    job_id = await insert(direct, "w", {})
    worker = JobLoop(pool, settings, registry, concurrency=1)
    task = asyncio.create_task(worker.run())
    await watcher.wait_for(job_id, "processing")
    worker.request_stop()
    release.set()
    await asyncio.wait_for(task, 5)
    assert await direct.fetchval("SELECT status FROM jobs WHERE id = $1", job_id) == "completed"


async def test_listener_wakes_an_idle_worker(pool, make_settings, urls, direct, watcher):
    settings = make_settings(poll_interval=timedelta(seconds=60))
    worker = JobLoop(pool, settings, default_registry(), concurrency=2)
    listener = Listener(urls.direct, settings, worker.notify, worker.wake)
    listen_task = asyncio.create_task(listener.run())
    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(listener.listening.wait(), 5)
    job_id = await insert(direct)
    await watcher.wait_for(job_id, "completed", timeout=5)  # far below the 60 s poll
    worker.request_stop()
    await listener.stop()
    await asyncio.wait_for(asyncio.gather(task, listen_task), 5)


async def test_trailing_poll_catches_a_throttled_wakeup(pool, make_settings, urls, direct, watcher):
    # A 10 s throttle window: only the first insert notifies; the second is found by the
    # trailing poll, long before the 60 s fallback poll or the first job's end.
    await direct.execute("SELECT sitemap_worker_set_wakeup_window(10000)")
    inserter = await asyncpg.connect(urls.direct)
    settings = make_settings(
        poll_interval=timedelta(seconds=60), trailing_poll=timedelta(seconds=0.3)
    )
    worker = JobLoop(pool, settings, default_registry(), concurrency=2)
    listener = Listener(urls.direct, settings, worker.notify, worker.wake)
    tasks = [asyncio.create_task(listener.run()), asyncio.create_task(worker.run())]
    await asyncio.wait_for(listener.listening.wait(), 5)
    first = await insert(inserter, "noop", {"seconds": 3})
    await watcher.wait_for(first, "processing", timeout=5)
    second = await insert(inserter, "noop", {})
    rows = await watcher.wait_for(second, "completed", timeout=2.5)
    assert await direct.fetchval("SELECT status FROM jobs WHERE id = $1", first) == "processing"
    assert rows[0]["attempts"] == 1
    worker.request_stop()
    await listener.stop()
    await asyncio.wait_for(asyncio.gather(*tasks), 10)
    await inserter.close()


def sample(worker: JobLoop, name: str, **labels: str) -> float:
    value = worker.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def test_metrics_count_each_outcome_once_it_is_written(pool, make_settings, direct):
    async def flaky(ctx, payload):
        raise RetryableJobError("upstream said 503", delay=0)

    registry = default_registry()
    registry.add(JobType("flaky", Empty, flaky))
    for _ in range(3):
        await insert(direct, "noop")
    await insert(direct, "noop", {"seconds": "abc"})  # invalid payload: failed at once
    await insert(direct, "flaky", {}, max_attempts=2)  # one retry, then failed
    worker = await run_burst(pool, make_settings(), registry)
    assert sample(worker, "sitemap_worker_jobs_claimed_total", job_type="noop") == 4
    assert sample(worker, "sitemap_worker_jobs_claimed_total", job_type="flaky") == 2
    assert sample(worker, "sitemap_worker_jobs_completed_total", job_type="noop") == 3
    assert sample(worker, "sitemap_worker_jobs_failed_total", job_type="noop") == 1
    assert sample(worker, "sitemap_worker_jobs_retried_total", job_type="flaky") == 1
    assert sample(worker, "sitemap_worker_jobs_failed_total", job_type="flaky") == 1
    assert (
        sample(
            worker,
            "sitemap_worker_job_duration_seconds_count",
            job_type="noop",
            outcome="completed",
        )
        == 3
    )
    # Every claim observed how long the job waited, by the database's clock.
    assert sample(worker, "sitemap_worker_pickup_latency_seconds_count") == 6
    assert 0 < sample(worker, "sitemap_worker_pickup_latency_seconds_sum") < 30
