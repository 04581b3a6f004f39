"""The installed worker as a user runs it: real processes, real psql, real signals."""

from __future__ import annotations

import asyncio
import json
import signal
from collections import Counter

import asyncpg

from tests.conftest import admin_dsn
from tests.support.processes import psql


async def insert_noop(conn: asyncpg.Connection, seconds: float = 0) -> int:
    return await conn.fetchval(
        "INSERT INTO jobs (job_type, payload) VALUES ('noop', $1::jsonb) RETURNING id",
        json.dumps({"seconds": seconds}),
    )


async def test_job_inserted_by_psql_is_completed_by_running_worker(spawn, direct_dsn, watcher):
    await spawn("run", WORKER_POLL_INTERVAL="60")  # only a NOTIFY can wake it in time
    job_id = int(
        await psql(
            direct_dsn, "INSERT INTO jobs (job_type, payload) VALUES ('noop', '{}') RETURNING id"
        )
    )
    [row] = await watcher.wait_for(job_id, "completed", timeout=5)
    assert row["attempts"] == 1 and row["progress"] == 1
    assert (row["started_at"] - row["created_at"]).total_seconds() < 1


async def test_job_inserted_while_listener_is_disconnected_is_picked_up(
    spawn, pg_server, database, watcher
):
    worker = await spawn("run", WORKER_POLL_INTERVAL="60")
    admin = await asyncpg.connect(admin_dsn(pg_server))  # ALLOW_CONNECTIONS needs another database
    await admin.execute(f"ALTER DATABASE {database} ALLOW_CONNECTIONS false")  # no reconnect yet
    try:
        killed = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = $1 AND application_name = 'sitemap-worker-listener'",
            database,
        )
        assert killed == 1
        await worker.wait_for_line("listener lost")
        job_id = await insert_noop(watcher.conn)
        pending = await watcher.conn.fetchval("SELECT status FROM jobs WHERE id = $1", job_id)
        assert pending == "pending"
    finally:
        await admin.execute(f"ALTER DATABASE {database} ALLOW_CONNECTIONS true")
        await admin.close()
    await worker.wait_for_line("listener reconnected")
    await watcher.wait_for(job_id, "completed", timeout=10)  # the catch-up claim, not the 60 s poll


async def test_killed_worker_job_is_finished_by_another_exactly_once(spawn, direct, watcher):
    first = await spawn("run")
    job_id = await insert_noop(direct, seconds=1.0)
    await watcher.wait_for(job_id, "processing")
    first.proc.kill()  # SIGKILL: no cleanup at all
    await first.wait()
    assert await direct.fetchval("SELECT status FROM jobs WHERE id = $1", job_id) == "processing"
    await spawn("run")
    [row] = await watcher.wait_for(job_id, "completed", timeout=20)  # lease is 3 s
    assert row["attempts"] == 2
    assert Counter(e for e in watcher.events if e[0] == job_id)[(job_id, "completed")] == 1


async def test_sigterm_returns_unfinished_job_to_pending(spawn, direct, watcher):
    worker = await spawn("run")
    job_id = await insert_noop(direct, seconds=60)
    await watcher.wait_for(job_id, "processing")
    worker.signal(signal.SIGTERM)
    assert await worker.wait(timeout=10) == 0
    row = await direct.fetchrow("SELECT * FROM jobs WHERE id = $1", job_id)
    assert row["status"] == "pending" and row["attempts"] == 0 and row["owner"] is None


async def test_second_signal_exits_at_once(spawn, direct, watcher):
    worker = await spawn("run", WORKER_SHUTDOWN_GRACE="60")

    job_id = await direct.fetchval(
        "INSERT INTO jobs (job_type, payload) VALUES ('noop', '{\"seconds\": 60}') RETURNING id"
    )
    await watcher.wait_for(job_id, "processing")
    worker.signal(signal.SIGINT)
    await worker.wait_for_line("stopping")
    worker.signal(signal.SIGINT)
    assert await worker.wait(timeout=5) == 130


async def test_cancel_pending_and_running_jobs_from_psql(spawn, direct_dsn, direct, watcher):
    pending = await direct.fetchval(
        "INSERT INTO jobs (job_type, run_at) VALUES ('noop', now() + interval '1 hour') RETURNING id"
    )
    await psql(direct_dsn, f"UPDATE jobs SET status = 'cancelled' WHERE id = {pending}")
    await spawn("run")
    running = await insert_noop(direct, seconds=60)
    await watcher.wait_for(running, "processing")
    await psql(direct_dsn, f"UPDATE jobs SET status = 'cancelled' WHERE id = {running}")
    for job_id in (pending, running):
        row = await direct.fetchrow("SELECT * FROM jobs WHERE id = $1", job_id)
        assert row["status"] == "cancelled" and row["finished_at"] is not None
    # The worker notices within its heartbeat and frees the slot: a new job runs at once.
    after = await insert_noop(direct)
    await watcher.wait_for(after, "completed", timeout=5)
    assert await direct.fetchval("SELECT started_at FROM jobs WHERE id = $1", pending) is None


BAD_JOBS = [
    ("noop", "[]"),
    ("noop", '"text"'),
    ("noop", "null"),
    ("noop", "42"),
    ("noop", "true"),
    ("noop", '{"seconds": "abc"}'),
    ("noop", '{"seconds": -1}'),
    ("noop", '{"seconds": 1e12}'),
    ("noop", '{"seconds": [1, 2]}'),
    ("noop", '{"seconds": {"a": 1}}'),
    ("noop", '{"secs": 1}'),
    ("noop", '{"seconds": null}'),
    ("noop", '{"seconds": "NaN"}'),
    ("noop", '{"seconds": "Infinity"}'),
    ("noop", '{"seconds": "1 hour"}'),
    ("no_such_type", "{}"),
    ("", "{}"),
    ("NOOP", "{}"),
    (" noop", "{}"),
    ("x" * 300, "{}"),
]


async def test_twenty_bad_payloads_fail_clearly_while_worker_keeps_serving(
    spawn, direct_dsn, direct, watcher
):
    worker = await spawn("run")
    values = ", ".join(f"('{t}', '{p}')" for t, p in BAD_JOBS)
    ids = [
        int(x)
        for x in (
            await psql(
                direct_dsn, f"INSERT INTO jobs (job_type, payload) VALUES {values} RETURNING id"
            )
        ).split()
    ]
    assert len(ids) == 20
    rows = await watcher.wait_for(ids, "failed", timeout=15)
    for row in rows:
        assert row["attempts"] == 1, row  # permanent: never retried
        assert row["error"].startswith(("invalid payload for noop: ", "unknown job type ")), row[
            "error"
        ]
    assert len({r["error"] for r in rows}) >= 15  # each says what is wrong with it
    good = await insert_noop(direct)
    await watcher.wait_for(good, "completed", timeout=5)
    assert worker.proc.returncode is None


async def test_four_workers_eight_clients_5000_jobs_each_completed_exactly_once(
    spawn, direct_dsn, watcher
):
    for _ in range(4):
        await spawn("run", WORKER_LOG_LEVEL="WARNING", ready=False)
    per_client = 625

    async def client() -> None:
        conn = await asyncpg.connect(direct_dsn)
        try:
            for _ in range(per_client):
                await conn.execute("INSERT INTO jobs (job_type) VALUES ('noop')")
        finally:
            await conn.close()

    await asyncio.gather(*[client() for _ in range(8)])
    await watcher.wait_until(
        "SELECT count(*) = 5000 FROM jobs WHERE status = 'completed'", timeout=60
    )
    stats = await watcher.conn.fetchrow(
        "SELECT count(*) AS n, max(attempts) AS max_attempts, min(attempts) AS min_attempts,"
        " count(DISTINCT owner) AS owners FROM jobs"
    )
    assert stats["n"] == 5000 and stats["min_attempts"] == stats["max_attempts"] == 1
    completed = [job for job, status in watcher.events if status == "completed"]
    assert len(completed) == len(set(completed)) == 5000
    assert await watcher.conn.fetchval("SELECT count(*) FROM jobs WHERE error IS NOT NULL") == 0
