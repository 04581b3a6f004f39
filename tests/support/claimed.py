"""A job row that a test holds as its own 'processing' job, and the context a handler gets."""

from __future__ import annotations

import asyncio

import asyncpg

from worker.context import ClaimedJob, JobContext
from worker.settings import Settings

OWNER = "test-owner"


async def claimed_context(
    direct: asyncpg.Connection,
    pool: asyncpg.Pool,
    settings: Settings,
    job_type: str = "sitemap_scan",
) -> JobContext:
    """A job claimed by OWNER (lease one minute ahead), with the JobContext its handler
    would run in: phases on `pool` pass the ownership guard."""
    job_id = await direct.fetchval(
        "INSERT INTO jobs (job_type, status, owner, lease_expires_at, started_at, attempts)"
        " VALUES ($1, 'processing', $2, now() + interval '1 minute', now(), 1) RETURNING id",
        job_type,
        OWNER,
    )
    return JobContext(
        ClaimedJob(job_id, job_type, "{}", 1, 3), OWNER, pool, settings, asyncio.Event()
    )
