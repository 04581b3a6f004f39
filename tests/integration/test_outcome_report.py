"""A job's completion is reported written once, also when two outcomes of that job share a
write: the job was claimed again while an older run of it still ran (a server crash lost
the first claim, which commits without waiting for the WAL flush)."""

from __future__ import annotations

import asyncio
import logging

import asyncpg
import pytest

from worker.context import ClaimedJob
from worker.outcomes import Outcome, OutcomeWriter


async def test_two_outcomes_of_one_job_in_one_write_are_one_completion(
    pool: asyncpg.Pool, direct: asyncpg.Connection, settings, caplog: pytest.LogCaptureFixture
) -> None:
    job_id = await direct.fetchval(
        "INSERT INTO jobs (job_type, status, owner, attempts, lease_expires_at) "
        "VALUES ('noop', 'processing', 'w1', 1, now() + interval '1 minute') RETURNING id"
    )
    job = ClaimedJob(job_id, "noop", "{}", 1, 3, 0, None, 0.0)
    writer = OutcomeWriter(pool, settings, "w1")
    caplog.set_level(logging.INFO, logger="worker.outcomes")
    writer.submit(Outcome(job, "completed", result={"run": 1}))
    writer.submit(Outcome(job, "completed", result={"run": 2}))
    task = asyncio.create_task(writer.run())
    try:
        await asyncio.wait_for(writer.wait_idle(), 10)
    finally:
        task.cancel()
    said = [r.getMessage() for r in caplog.records if f"job {job_id} " in r.getMessage()]
    assert sum(" completed in " in m for m in said) == 1, said
    assert sum("not written" in m for m in said) == 1, said
    assert writer.written == 1
    assert await direct.fetchval("SELECT status FROM jobs WHERE id = $1", job_id) == "completed"
