"""Pruning ended jobs: what goes, what stays, through PgBouncer too, and from the CLI."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import asyncpg

from tests.support.processes import process_env, worker_command
from worker.database_urls import Urls
from worker.sql import q


async def job(
    conn: asyncpg.Connection,
    status: str,
    age_days: float,
    *,
    parent: int | None = None,
    job_type: str = "noop",
) -> int:
    """A job that was created and (if ended) finished `age_days` ago."""
    return await conn.fetchval(
        "INSERT INTO jobs (job_type, status, parent_id, created_at, finished_at)"
        " SELECT $1, $2, $3, t, CASE WHEN $2 IN ('completed', 'failed', 'cancelled')"
        "                          THEN t + interval '1 minute' END"
        "   FROM (SELECT now() - make_interval(days => $4::int) AS t) ago RETURNING id",
        job_type,
        status,
        parent,
        int(age_days),
    )


async def scan_rows(conn: asyncpg.Connection, job_id: int, urls: int) -> None:
    file_id = await conn.fetchval(
        "INSERT INTO sitemap_files (job_id, url, status)"
        " VALUES ($1, 'https://a.test/s.xml', 'ok') RETURNING id",
        job_id,
    )
    await conn.execute(
        "INSERT INTO sitemap_urls (job_id, sitemap_file_id, loc)"
        " SELECT $1, $2, 'https://a.test/p' || g FROM generate_series(1, $3) g",
        job_id,
        file_id,
        urls,
    )


async def test_prune_deletes_only_old_ended_jobs_with_their_rows(urls: Urls, direct):
    old_scan = await job(direct, "completed", 40, job_type="sitemap_scan")
    await scan_rows(direct, old_scan, 250)
    old_failed = await job(direct, "failed", 40)
    old_cancelled = await job(direct, "cancelled", 40)
    recent_scan = await job(direct, "completed", 2, job_type="sitemap_scan")
    await scan_rows(direct, recent_scan, 10)
    old_pending = await job(direct, "pending", 40)
    old_processing = await job(direct, "processing", 40)
    busy_batch = await job(direct, "completed", 40, job_type="sitemap_batch")
    running_child = await job(direct, "processing", 40, parent=busy_batch)
    done_batch = await job(direct, "completed", 40, job_type="sitemap_batch")
    await job(direct, "completed", 40, parent=done_batch)

    conn = await asyncpg.connect(urls.work, statement_cache_size=0)  # maybe via PgBouncer
    try:
        deleted = await conn.fetchval(q("prune"), timedelta(days=30), 3)  # several batches
    finally:
        await conn.close()

    left = {r["id"] for r in await direct.fetch("SELECT id FROM jobs")}
    assert left == {recent_scan, old_pending, old_processing, busy_batch, running_child}
    assert deleted == 5  # old scan, failed, cancelled, done batch (its child by cascade)
    assert not {old_scan, old_failed, old_cancelled, done_batch} & left
    per_job = dict(await direct.fetch("SELECT job_id, count(*) FROM sitemap_urls GROUP BY 1"))
    assert per_job == {recent_scan: 10}
    assert await direct.fetchval("SELECT count(*) FROM sitemap_files") == 1


async def test_prune_command_reports_what_it_deleted(direct, direct_dsn):
    for _ in range(3):
        await job(direct, "completed", 10)
    await job(direct, "completed", 0)
    proc = await asyncio.create_subprocess_exec(
        *worker_command(),
        "prune",
        "--older-than",
        "7d",
        env=process_env({"DATABASE_URL": direct_dsn}),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    assert out.decode().startswith("deleted 3 ended job(s) older than 7 days")
    assert await direct.fetchval("SELECT count(*) FROM jobs") == 1
