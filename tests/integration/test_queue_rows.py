"""Rows the queue must survive, and batch counters that stay right under concurrency.

Each test puts rows in the table the way a person with psql could, then checks what the
database and a worker make of them."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator

import asyncpg
import pytest

from tests.support.locks import until_a_statement_waits_on_a_lock
from worker.engine import JobLoop
from worker.jobs import default_registry

TERMINAL = ("completed", "failed", "cancelled")


async def run_burst(pool, settings, concurrency: int = 4) -> JobLoop:
    worker = JobLoop(pool, settings, default_registry(), concurrency=concurrency, burst=True)
    await asyncio.wait_for(worker.run(), 60)
    return worker


async def detached_batch(
    conn: asyncpg.Connection, children: int, status: str = "processing", child_type: str = "noop"
) -> tuple[int, list[int]]:
    """A batch as a worker leaves it after the fan-out (processing, no owner, no lease),
    with `children` children in `status` (a worker holds processing ones)."""
    batch = await conn.fetchval(
        "INSERT INTO jobs (job_type, payload, status, started_at, attempts)"
        " VALUES ('sitemap_batch', '{\"domains\": [\"x\"]}', 'processing', now(), 1) RETURNING id"
    )
    ids = [
        r["id"]
        for r in await conn.fetch(
            "INSERT INTO jobs (job_type, payload, parent_id, status, owner, attempts, lease_expires_at)"
            " SELECT $1, CASE WHEN $1 = 'noop' THEN '{}' ELSE jsonb_build_object('domain', 'd' || g || '.test') END,"
            "        $2, $3,"
            "        CASE WHEN $3 = 'processing' THEN 'w' END, CASE WHEN $3 = 'processing' THEN 1 ELSE 0 END,"
            "        CASE WHEN $3 = 'processing' THEN now() + interval '1 hour' END"
            "   FROM generate_series(1, $4) g ORDER BY g RETURNING id",
            child_type,
            batch,
            status,
            children,
        )
    ]
    return batch, sorted(ids)


async def counters_match(conn: asyncpg.Connection, batch: int) -> None:
    row = await conn.fetchrow(
        "SELECT b.children_total, b.children_ended,"
        "       (SELECT count(*) FROM jobs c WHERE c.parent_id = b.id) AS total,"
        "       (SELECT count(*) FROM jobs c WHERE c.parent_id = b.id"
        "                                      AND c.status = ANY($2::text[])) AS ended"
        "  FROM jobs b WHERE b.id = $1",
        batch,
        list(TERMINAL),
    )
    assert (row["children_total"], row["children_ended"]) == (row["total"], row["ended"])


@pytest.fixture
async def session_b(direct_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(direct_dsn)
    yield conn
    await conn.close()


@pytest.fixture
async def observer(direct_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """A third session, to see the others' lock waits."""
    conn = await asyncpg.connect(direct_dsn)
    yield conn
    await conn.close()


# -- 1. two children ending at once ---------------------------------------------------------


async def test_two_children_ending_at_once_complete_their_batch(direct, session_b, observer):
    """Session A ends child 1 and holds its transaction; session B ends child 2 and
    blocks; A commits. Both children ended, so the batch must complete, with both in
    its result."""
    batch, (first, second) = await detached_batch(direct, 2)
    a = direct.transaction()
    await a.start()
    await direct.execute("UPDATE jobs SET status = 'completed' WHERE id = $1", first)
    b = asyncio.create_task(
        session_b.execute(
            "/* session B */ UPDATE jobs SET status = 'completed' WHERE id = $1", second
        )
    )
    await until_a_statement_waits_on_a_lock(observer, "/* session B */%")
    await a.commit()
    await asyncio.wait_for(b, 10)
    row = await direct.fetchrow("SELECT * FROM jobs WHERE id = $1", batch)
    assert (row["status"], row["progress"], row["owner"]) == ("completed", 1, None)
    result = json.loads(row["result"])
    assert (result["domain_count"], result["completed"]) == (2, 2)
    assert [d["job_id"] for d in result["domains"]] == [first, second]
    assert row["finished_at"] is not None


# -- 2. a child's end costs O(1) --------------------------------------------------------------


async def jobs_rows_read(conn: asyncpg.Connection) -> int:
    """Rows of `jobs` this transaction has read so far (sequential and index fetches)."""
    return await conn.fetchval(
        "SELECT seq_tup_read + coalesce(idx_tup_fetch, 0) FROM pg_stat_xact_user_tables"
        " WHERE relname = 'jobs'"
    )


async def test_ending_one_child_reads_no_other_child(direct):
    """The batch's bookkeeping for one child's end reads a handful of rows whatever the
    batch's size; the whole batch is read once, when its last child ends."""
    batch, ids = await detached_batch(direct, 2000)
    async with direct.transaction():
        before = await jobs_rows_read(direct)
        await direct.fetch(
            "SELECT sitemap_worker_complete('w', $1::bigint[], $2::text[])",
            [ids[0]],
            ['{"url_count": 3}'],
        )
        read = await jobs_rows_read(direct) - before
    assert read < 20, f"ending one child read {read} rows of jobs"
    progress = await direct.fetchval("SELECT progress FROM jobs WHERE id = $1", batch)
    assert progress == pytest.approx(1 / 2000)
    await direct.fetch(
        "SELECT sitemap_worker_complete('w', $1::bigint[], $2::text[])",
        ids[1:],
        ['{"url_count": 1}'] * (len(ids) - 1),
    )
    row = await direct.fetchrow("SELECT status, result FROM jobs WHERE id = $1", batch)
    assert row["status"] == "completed"
    result = json.loads(row["result"])
    assert (result["domain_count"], result["completed"], result["url_count"]) == (2000, 2000, 2002)


async def test_counters_follow_inserts_ends_retries_deletes_and_cancellation(direct):
    batch, ids = await detached_batch(direct, 4, status="pending")
    await counters_match(direct, batch)
    # Children inserted already ended count as ended; several batches in one statement.
    other, _ = await detached_batch(direct, 1, status="pending")
    await direct.execute(
        "INSERT INTO jobs (job_type, parent_id, status) VALUES"
        " ('noop', $1, 'failed'), ('noop', $2, 'completed'), ('noop', $1, 'pending')",
        batch,
        other,
    )
    await counters_match(direct, batch)
    await counters_match(direct, other)
    await direct.execute(
        "UPDATE jobs SET status = 'completed' WHERE id = ANY($1::bigint[])", ids[:2]
    )
    await direct.execute(
        "UPDATE jobs SET status = 'failed' WHERE id = $1", ids[0]
    )  # ended -> ended
    await counters_match(direct, batch)
    await direct.execute("UPDATE jobs SET status = 'pending' WHERE id = $1", ids[0])  # a retry
    await counters_match(direct, batch)
    await direct.execute(
        "DELETE FROM jobs WHERE id = ANY($1::bigint[])", ids[1:3]
    )  # ended + pending
    await counters_match(direct, batch)
    assert await direct.fetchval("SELECT status FROM jobs WHERE id = $1", batch) == "processing"
    await direct.execute("UPDATE jobs SET status = 'cancelled' WHERE id = $1", batch)
    await counters_match(direct, batch)
    row = await direct.fetchrow(
        "SELECT status, children_total, children_ended FROM jobs WHERE id = $1", batch
    )
    assert row["status"] == "cancelled"  # its children ending do not complete it
    assert row["children_total"] == row["children_ended"] == 4


async def test_deleting_the_last_unfinished_child_completes_the_batch(direct):
    batch, ids = await detached_batch(direct, 2, status="pending")
    await direct.execute("UPDATE jobs SET status = 'completed' WHERE id = $1", ids[0])
    await direct.execute("DELETE FROM jobs WHERE id = $1", ids[1])
    row = await direct.fetchrow("SELECT status, result FROM jobs WHERE id = $1", batch)
    assert row["status"] == "completed" and json.loads(row["result"])["domain_count"] == 1


async def test_a_retried_child_reopens_its_completed_batch_which_ends_again(pool, settings, direct):
    batch, ids = await detached_batch(direct, 2, status="pending")
    await run_burst(pool, settings)
    first = await direct.fetchrow("SELECT * FROM jobs WHERE id = $1", batch)
    assert first["status"] == "completed"
    await direct.execute(
        "UPDATE jobs SET status = 'failed', error = 'by hand' WHERE id = $1", ids[1]
    )
    await direct.execute(
        "UPDATE jobs SET status = 'pending', attempts = 0, error = NULL, run_at = now() WHERE id = $1",
        ids[1],
    )
    reopened = await direct.fetchrow("SELECT * FROM jobs WHERE id = $1", batch)
    assert (reopened["status"], reopened["progress"], reopened["finished_at"]) == (
        "processing",
        0.5,
        None,
    )
    await counters_match(direct, batch)
    await run_burst(pool, settings)
    again = await direct.fetchrow("SELECT * FROM jobs WHERE id = $1", batch)
    assert again["status"] == "completed" and again["finished_at"] > first["finished_at"]
    assert json.loads(again["result"])["completed"] == 2
    # The other child was not re-run: reopening is not a retry of the batch.
    assert await direct.fetchval("SELECT attempts FROM jobs WHERE id = $1", ids[0]) == 1


async def test_an_odd_child_result_never_stops_its_batch_from_ending(direct):
    batch, ids = await detached_batch(direct, 3)
    await direct.fetch(
        "SELECT sitemap_worker_complete('w', $1::bigint[], $2::text[])",
        ids,
        [
            '{"url_count": "many", "sitemap_count": 1e30}',
            "[1, 2]",
            '{"url_count": 99999999999999999999}',
        ],
    )
    row = await direct.fetchrow("SELECT status, result FROM jobs WHERE id = $1", batch)
    assert row["status"] == "completed"
    result = json.loads(row["result"])
    assert result["url_count"] == 99999999999999999999 and result["domain_count"] == 3


# -- 4. no row stops the queue --------------------------------------------------------------


@pytest.mark.parametrize(
    "columns, values",
    [
        ("attempts", "2147483647"),
        ("attempts", "-1"),
        ("max_attempts", "0"),
        ("max_attempts", "2147483647"),
        ("priority", "2147483647"),
        ("priority", "-2147483648"),
        ("progress", "'NaN'"),
        ("progress", "1.5"),
    ],
)
async def test_out_of_range_values_are_refused(direct, columns, values):
    with pytest.raises(asyncpg.CheckViolationError):
        await direct.execute(
            f"INSERT INTO jobs (job_type, payload, {columns}) VALUES ('noop', '{{}}', {values})"
        )


async def test_null_payload_is_refused(direct):
    with pytest.raises(asyncpg.NotNullViolationError):
        await direct.execute("INSERT INTO jobs (job_type, payload) VALUES ('noop', NULL)")


async def test_odd_rows_fail_alone_while_every_other_job_runs(pool, settings, direct):
    at_limit = await direct.fetchval(
        "INSERT INTO jobs (job_type, payload, attempts, priority) VALUES ('noop', '{}', 10000, 1000000)"
        " RETURNING id"
    )
    not_object = await direct.fetchval(
        "INSERT INTO jobs (job_type, payload, priority) VALUES ('noop', '[1]', -1000000) RETURNING id"
    )
    infinite = await direct.fetchval(
        "INSERT INTO jobs (job_type, payload, created_at, run_at)"
        " VALUES ('noop', '{}', '-infinity', '-infinity') RETURNING id"
    )
    deep = await direct.fetchval(
        "INSERT INTO jobs (job_type, payload) VALUES ('noop', $1::jsonb) RETURNING id",
        '{"seconds": ' + "[" * 5000 + "]" * 5000 + "}",
    )
    good = [
        await direct.fetchval("INSERT INTO jobs (job_type) VALUES ('noop') RETURNING id")
        for _ in range(5)
    ]
    await run_burst(pool, settings, concurrency=3)
    rows = {r["id"]: r for r in await direct.fetch("SELECT * FROM jobs")}
    assert all(rows[i]["status"] == "completed" for i in [*good, infinite])
    assert rows[at_limit]["status"] == "failed" and rows[at_limit]["attempts"] == 10000
    assert "attempts reached the limit of 10000" in rows[at_limit]["error"]
    assert rows[not_object]["status"] == "failed"
    assert "expected a JSON object" in rows[not_object]["error"]
    assert (rows[deep]["status"], rows[deep]["attempts"]) == ("failed", 1)  # permanent, not retried
    assert rows[deep]["error"] == "invalid payload for noop: nested too deeply"


async def test_the_claim_reports_a_finite_wait_for_infinite_timestamps(direct):
    for when in ("-infinity", "infinity"):
        await direct.execute(
            "INSERT INTO jobs (job_type, created_at, run_at) VALUES ('noop', $1::text::timestamptz, '-infinity')",
            when,
        )
    rows = await direct.fetch("SELECT * FROM sitemap_worker_claim('w', 10, 30)")
    assert len(rows) == 2 and all(math.isfinite(r["waited"]) and r["waited"] >= 0 for r in rows)


# -- the claim takes processing rows with no lease -------------------------------------------


async def test_a_row_inserted_as_processing_without_a_lease_is_claimed(pool, settings, direct):
    orphan = await direct.fetchval(
        "INSERT INTO jobs (job_type, status) VALUES ('noop', 'processing') RETURNING id"
    )
    spent = await direct.fetchval(
        "INSERT INTO jobs (job_type, status, attempts, max_attempts)"
        " VALUES ('noop', 'processing', 3, 3) RETURNING id"
    )
    await run_burst(pool, settings)
    row = await direct.fetchrow("SELECT * FROM jobs WHERE id = $1", orphan)
    assert (row["status"], row["attempts"]) == ("completed", 1)
    row = await direct.fetchrow("SELECT * FROM jobs WHERE id = $1", spent)
    assert row["status"] == "failed" and "no lease" in row["error"]


async def test_a_detached_batch_is_not_claimed_while_its_children_run(direct):
    batch, _ = await detached_batch(direct, 2, status="pending")
    claimed = {
        r["id"] for r in await direct.fetch("SELECT * FROM sitemap_worker_claim('w', 10, 30)")
    }
    assert batch not in claimed and len(claimed) == 2
    assert await direct.fetchval("SELECT owner FROM jobs WHERE id = $1", batch) is None


# -- 6. a retried job forgets its end -------------------------------------------------------


async def test_a_job_set_back_to_pending_or_processing_loses_its_finished_at(
    pool, settings, direct
):
    job = await direct.fetchval("INSERT INTO jobs (job_type) VALUES ('noop') RETURNING id")
    await run_burst(pool, settings)
    ended = await direct.fetchval("SELECT finished_at FROM jobs WHERE id = $1", job)
    assert ended is not None
    await direct.execute("UPDATE jobs SET status = 'processing' WHERE id = $1", job)
    assert await direct.fetchval("SELECT finished_at FROM jobs WHERE id = $1", job) is None
    await direct.execute("UPDATE jobs SET status = 'completed' WHERE id = $1", job)
    # The README's retry recipe.
    await direct.execute(
        "UPDATE jobs SET status = 'pending', attempts = 0, error = NULL, run_at = now() WHERE id = $1",
        job,
    )
    assert await direct.fetchval("SELECT finished_at FROM jobs WHERE id = $1", job) is None
    await run_burst(pool, settings)
    row = await direct.fetchrow("SELECT * FROM jobs WHERE id = $1", job)
    assert row["status"] == "completed" and row["finished_at"] >= row["started_at"] > ended


async def batch_trigger_calls(conn: asyncpg.Connection) -> dict[str, int]:
    """This transaction's calls of the batch bookkeeping functions so far."""
    rows = await conn.fetch(
        "SELECT funcname, calls FROM pg_stat_xact_user_functions"
        " WHERE funcname LIKE 'jobs_%children%'"
    )
    return {r["funcname"]: r["calls"] for r in rows}


async def test_statements_that_change_no_childs_count_never_call_the_batch_triggers(direct):
    batch, ids = await detached_batch(direct, 3, status="pending")
    async with direct.transaction():
        await direct.execute("SET LOCAL track_functions = 'pl'")
        await direct.execute(
            "INSERT INTO jobs (job_type) SELECT 'noop' FROM generate_series(1, 50)"
        )
        await direct.fetch("SELECT * FROM sitemap_worker_claim('w', 60, 30)")  # children too
        await direct.execute("UPDATE jobs SET progress = 0.5 WHERE status = 'processing'")
        assert await batch_trigger_calls(direct) == {}
        await direct.execute(
            "UPDATE jobs SET status = 'completed' WHERE id = ANY($1::bigint[])", ids[:2]
        )
        calls = await batch_trigger_calls(direct)
    # One flag for the statement's first child, one count for the statement.
    assert calls == {"jobs_flag_children_changed": 1, "jobs_count_batch_children_upd": 1}
    assert await direct.fetchval("SELECT children_ended FROM jobs WHERE id = $1", batch) == 2
