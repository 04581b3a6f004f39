"""The outcome writer after a transient error in the middle of a batch: what was already
written stays written and is reported once; only the rest is written again."""

from __future__ import annotations

import asyncio
import logging

import asyncpg

from tests.support.claimed import OWNER
from tests.support.locks import until_a_statement_waits_on_a_lock
from tests.support.status_gate import gate_closed, install_gate
from worker.context import ClaimedJob
from worker.outcomes import Outcome, OutcomeWriter


async def claimed_job(direct: asyncpg.Connection) -> ClaimedJob:
    job_id = await direct.fetchval(
        "INSERT INTO jobs (job_type, status, owner, lease_expires_at, started_at, attempts)"
        " VALUES ('noop', 'processing', $1, now() + interval '1 minute', now(), 1) RETURNING id",
        OWNER,
    )
    return ClaimedJob(job_id, "noop", "{}", 1, 3)


async def test_a_connection_lost_mid_batch_rewrites_only_what_was_not_written(
    pool, settings, direct, direct_dsn, caplog
):
    caplog.set_level(logging.INFO, logger="worker")
    done, failing = await claimed_job(direct), await claimed_job(direct)
    # The batch writes the completion first, then the failure, which waits at the gate
    # until the test kills its connection: a transient error after one write committed.
    await install_gate(direct, "n.status = 'failed'")
    writer = OutcomeWriter(pool, settings, OWNER)
    writer.submit(Outcome(done, "completed", result={"n": 1}))
    writer.submit(Outcome(failing, "failed", error="boom"))
    task = asyncio.create_task(writer.run())
    try:
        async with gate_closed(direct_dsn):
            await until_a_statement_waits_on_a_lock(direct, "%sitemap_worker_fail(%")
            assert (
                await direct.fetchval("SELECT status FROM jobs WHERE id = $1", done.id)
                == "completed"
            )
            killed = await direct.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE wait_event_type = 'Lock' AND query LIKE '%sitemap_worker_fail(%'"
            )
            assert killed == 1
        await asyncio.wait_for(writer.wait_idle(), 15)
    finally:
        task.cancel()
    rows = {r["id"]: r["status"] for r in await direct.fetch("SELECT id, status FROM jobs")}
    assert rows == {done.id: "completed", failing.id: "failed"}
    messages = [r.getMessage() for r in caplog.records]
    assert "cannot write job outcomes yet" in "\n".join(messages)  # the error did happen
    assert not [m for m in messages if "not written" in m], messages
    assert len([m for m in messages if f"job {done.id} noop completed" in m]) == 1
    assert writer.written == 2 and writer.held == 0
