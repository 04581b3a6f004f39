"""Applies `sql/migrations/*.sql` in order, once each, safely from many processes at once.

An empty database goes through every migration too, never `sql/schema.sql`: that file is the
current schema to read, kept equal to the migrations by tests/integration/test_schema_drift.py
(its header says why it is not applied)."""

from __future__ import annotations

import logging

from . import connections
from .settings import Settings
from .sql import migrations, q

log = logging.getLogger(__name__)


async def migrate(dsn: str, settings: Settings) -> list[str]:
    """Apply what is missing and return the versions applied now.

    Everything runs in one transaction under a transaction-level advisory lock: a second
    process waits, then finds nothing left to do; a failing migration leaves no trace; and
    it works through a transaction pooler because no lock outlives the transaction."""
    # No time limits: a migration may build an index over millions of URL rows.
    conn = await connections.connect(dsn, settings, command_timeout=None)
    applied: list[str] = []
    try:
        async with conn.transaction():
            await conn.execute("SET LOCAL statement_timeout = 0")
            await conn.execute(q("migrations_lock"))
            await conn.execute(q("migrations_table"))
            done = {r["version"] for r in await conn.fetch(q("applied_migrations"))}
            for version, text in migrations():
                if version in done:
                    continue
                await conn.execute(text)
                await conn.execute(q("record_migration"), version)
                applied.append(version)
    finally:
        await conn.close()
    for version in applied:
        log.info("applied migration %s", version)
    return applied
