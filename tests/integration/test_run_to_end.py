"""db.run_to_end / JobContext.run_phase: a cancelled job's statement in flight runs to its
end instead of being interrupted, so no cancel request is sent (PgBouncer 1.18 can crash on
one: pgbouncer#801). Through PgBouncer in transaction mode too."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager

import asyncpg
import pytest

from worker import db
from worker.context import ClaimedJob, JobContext

OWNER = "test-run-to-end"


@asynccontextmanager
async def table_locked(direct_dsn: str, direct: asyncpg.Connection) -> AsyncIterator[None]:
    """`held` locked by a connection of the test's own until the block ends."""
    await direct.execute("CREATE TABLE held (n int)")
    holder = await asyncpg.connect(direct_dsn)
    try:
        async with holder.transaction():
            await holder.execute("LOCK TABLE held IN ACCESS EXCLUSIVE MODE")
            yield
    finally:
        await holder.close()


async def blocked_on_lock(direct: asyncpg.Connection) -> None:
    """Until a statement of the pool waits for that lock (a bounded poll: a lock wait raises
    no event)."""
    async with asyncio.timeout(10):
        while not await direct.fetchval("SELECT count(*) FROM pg_stat_activity"
                                        " WHERE wait_event_type = 'Lock' AND query LIKE 'INSERT INTO held%'"):
            await asyncio.sleep(0.01)


async def cancel_while_blocked(direct_dsn: str, direct: asyncpg.Connection, work: Awaitable[object]) -> None:
    async with table_locked(direct_dsn, direct):
        caller = asyncio.ensure_future(work)
        await blocked_on_lock(direct)
        caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(caller, 10)


async def test_a_cancelled_caller_waits_for_its_statement_which_runs_to_its_end(
        direct_dsn, direct, pool, settings):
    async def insert() -> None:
        async with db.pooled_transaction(pool, settings) as conn:
            await conn.execute("INSERT INTO held VALUES (1)")

    await cancel_while_blocked(direct_dsn, direct, db.run_to_end(insert()))
    assert await direct.fetchval("SELECT count(*) FROM held") == 1  # not cancelled: committed


async def test_a_job_cancelled_mid_phase_lets_the_phase_finish(direct_dsn, direct, pool, settings):
    job_id = await direct.fetchval(
        "INSERT INTO jobs (job_type, status, owner, lease_expires_at, started_at, attempts)"
        " VALUES ('noop', 'processing', $1, now() + interval '1 minute', now(), 1) RETURNING id", OWNER)
    ctx = JobContext(ClaimedJob(job_id, "noop", "{}", 1, 3), OWNER, pool, settings, asyncio.Event())
    phase = ctx.run_phase(lambda conn: conn.execute("INSERT INTO held VALUES (2)"), progress=0.5)
    await cancel_while_blocked(direct_dsn, direct, phase)
    assert await direct.fetchval("SELECT count(*) FROM held") == 1
    assert await direct.fetchval("SELECT progress FROM jobs WHERE id = $1", job_id) == 0.5


async def test_without_it_the_statement_is_cancelled(direct_dsn, direct, pool, settings):
    """The control: the same cancellation without run_to_end interrupts the statement."""
    async def insert() -> None:
        async with db.pooled_transaction(pool, settings) as conn:
            await conn.execute("INSERT INTO held VALUES (3)")

    await cancel_while_blocked(direct_dsn, direct, insert())
    assert await direct.fetchval("SELECT count(*) FROM held") == 0
