"""A table lock held by a connection of the test's own: a way to catch a statement in flight."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg


@asynccontextmanager
async def held(dsn: str, statement: str) -> AsyncIterator[None]:
    """`statement` (one that takes a lock) in a transaction of its own connection, held open
    until the block ends."""
    holder = await asyncpg.connect(dsn)
    try:
        async with holder.transaction():
            await holder.execute(statement)
            yield
    finally:
        await holder.close()


@asynccontextmanager
async def table_locked(dsn: str, table: str) -> AsyncIterator[None]:
    """ACCESS EXCLUSIVE on `table` until the block ends: every statement touching it waits."""
    async with held(dsn, f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"):
        yield


async def until_a_statement_waits_on_a_lock(
    conn: asyncpg.Connection, query_like: str = "%", timeout: float = 10
) -> None:
    """A bounded poll: a lock wait raises no event."""
    async with asyncio.timeout(timeout):
        while not await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE wait_event_type = 'Lock' AND query LIKE $1",
            query_like,
        ):
            await asyncio.sleep(0.01)
