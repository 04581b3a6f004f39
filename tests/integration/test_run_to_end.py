"""connections.run_to_end / JobContext.run_phase: a cancelled job's statement in flight runs to its
end instead of being interrupted, so no cancel request is sent (PgBouncer 1.18 can crash on
one: pgbouncer#801). Through PgBouncer in transaction mode too."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import asyncpg
import pytest

from tests.support.claimed import claimed_context
from tests.support.locks import table_locked, until_a_statement_waits_on_a_lock
from worker import connections


async def cancel_while_blocked(
    direct_dsn: str, direct: asyncpg.Connection, work: Awaitable[object]
) -> None:
    await direct.execute("CREATE TABLE held (n int)")
    async with table_locked(direct_dsn, "held"):
        caller = asyncio.ensure_future(work)
        await until_a_statement_waits_on_a_lock(direct, "INSERT INTO held%")
        caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(caller, 10)


async def test_a_cancelled_caller_waits_for_its_statement_which_runs_to_its_end(
    direct_dsn, direct, pool, settings
):
    async def insert() -> None:
        async with connections.pooled_transaction(pool, settings) as conn:
            await conn.execute("INSERT INTO held VALUES (1)")

    await cancel_while_blocked(direct_dsn, direct, connections.run_to_end(insert()))
    assert await direct.fetchval("SELECT count(*) FROM held") == 1  # not cancelled: committed


async def test_a_job_cancelled_mid_phase_lets_the_phase_finish(direct_dsn, direct, pool, settings):
    ctx = await claimed_context(direct, pool, settings, "noop")
    phase = ctx.run_phase(lambda conn: conn.execute("INSERT INTO held VALUES (2)"), progress=0.5)
    await cancel_while_blocked(direct_dsn, direct, phase)
    assert await direct.fetchval("SELECT count(*) FROM held") == 1
    assert await direct.fetchval("SELECT progress FROM jobs WHERE id = $1", ctx.job.id) == 0.5


async def test_without_it_the_statement_is_cancelled(direct_dsn, direct, pool, settings):
    """The control: the same cancellation without run_to_end interrupts the statement."""

    async def insert() -> None:
        async with connections.pooled_transaction(pool, settings) as conn:
            await conn.execute("INSERT INTO held VALUES (3)")

    await cancel_while_blocked(direct_dsn, direct, insert())
    assert await direct.fetchval("SELECT count(*) FROM held") == 0


async def test_a_second_cancellation_leaves_the_connection_to_the_statement(
    direct_dsn, direct, pool, settings
):
    """The caller stops waiting at the second cancellation; the statement still runs to
    its end on its connection, which goes back to the pool only then, alive."""
    await direct.execute("CREATE TABLE held (n int)")

    async def insert(conn: asyncpg.Connection) -> None:
        await conn.execute("INSERT INTO held VALUES (4)")

    async with table_locked(direct_dsn, "held"):
        caller = asyncio.ensure_future(
            connections.pooled_transaction_to_end(pool, settings, insert)
        )
        await until_a_statement_waits_on_a_lock(direct, "INSERT INTO held%")
        pid = await direct.fetchval(
            "SELECT pid FROM pg_stat_activity WHERE query LIKE 'INSERT INTO held%'"
        )
        caller.cancel()
        await asyncio.sleep(0)  # the first cancellation reaches the caller's wait
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(caller, 10)
        # Still blocked, and still on its own connection.
        assert (
            await direct.fetchval(
                "SELECT wait_event_type FROM pg_stat_activity WHERE pid = $1", pid
            )
            == "Lock"
        )
    async with asyncio.timeout(10):
        while not await direct.fetchval("SELECT count(*) FROM held"):
            await asyncio.sleep(0.01)
    # The connection came back healthy: the pool hands it out and it answers.
    async with asyncio.timeout(10):
        while pool.get_idle_size() < 1:
            await asyncio.sleep(0.01)
    async with connections.pooled_transaction(pool, settings) as conn:
        assert await conn.fetchval("SELECT count(*) FROM held") == 1
