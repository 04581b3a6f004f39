"""A slow final-status write, made for real: a statement trigger on `jobs` (shaped like
the batch trigger, which ran after the statement had locked its rows) that waits for an
advisory lock the test holds on a connection of its own."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from tests.support.locks import held

GATE_KEY = 4243

ENDS_A_JOB = "o.status = 'processing' AND n.status <> 'processing'"


async def install_gate(conn: asyncpg.Connection, condition: str = ENDS_A_JOB) -> None:
    """Every UPDATE of `jobs` with a row where `condition` holds (n: new row, o: old row)
    waits for the gate, once it is closed."""
    await conn.execute(f"""
        CREATE FUNCTION test_status_gate() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF EXISTS (SELECT 1 FROM new_rows n JOIN old_rows o USING (id) WHERE {condition}) THEN
                PERFORM pg_advisory_xact_lock({GATE_KEY});
            END IF;
            RETURN NULL;
        END $$;
        CREATE TRIGGER test_status_gate AFTER UPDATE ON jobs
            REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
            FOR EACH STATEMENT EXECUTE FUNCTION test_status_gate();""")


@asynccontextmanager
async def gate_closed(dsn: str) -> AsyncIterator[None]:
    """Gated writes wait until the block ends."""
    async with held(dsn, f"SELECT pg_advisory_xact_lock({GATE_KEY})"):
        yield
