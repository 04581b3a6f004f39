"""Migrations, the wake-up trigger and the status channel, against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import json

import asyncpg
import psycopg
import pytest

from tests.conftest import admin_dsn, scratch_database
from worker.migrate import migrate
from worker.settings import Settings
from worker.sql import migrations, q

CONTRACT_COLUMNS = {
    "id",
    "job_type",
    "payload",
    "status",
    "progress",
    "result",
    "error",
    "attempts",
    "max_attempts",
    "priority",
    "run_at",
    "created_at",
    "started_at",
    "finished_at",
}


class Inbox:
    """Notifications received on one channel by a direct LISTEN connection."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self.arrived = asyncio.Event()

    def __call__(self, _c: object, _pid: int, _channel: str, payload: str) -> None:
        self.items.append(payload)
        self.arrived.set()


async def listen(conn: asyncpg.Connection, channel: str) -> Inbox:
    inbox = Inbox()
    await conn.add_listener(channel, inbox)
    return inbox


async def round_trip(conn: asyncpg.Connection) -> None:
    """Everything notified before this call has been delivered once it returns: our own
    NOTIFY on a marker channel comes after them in the queue."""
    marker = await listen(conn, "test_marker")
    await conn.execute("NOTIFY test_marker")
    await asyncio.wait_for(marker.arrived.wait(), 5)
    await conn.remove_listener("test_marker", marker)


@pytest.fixture
async def other(direct_dsn):
    conn = await asyncpg.connect(direct_dsn)
    yield conn
    await conn.close()


async def test_jobs_has_every_contract_column(direct):
    cols = {
        r["column_name"]
        for r in await direct.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'jobs'"
        )
    }
    assert cols >= CONTRACT_COLUMNS
    assert {"owner", "lease_expires_at", "parent_id"} <= cols


async def test_invalid_status_is_refused_by_the_database(direct):
    with pytest.raises(asyncpg.CheckViolationError):
        await direct.execute("INSERT INTO jobs (job_type, status) VALUES ('noop', 'done')")


async def test_migrate_twice_and_concurrently_is_safe(pg_server, database):
    dsn = f"postgresql://postgres@127.0.0.1:{pg_server.port}/{database}"
    with psycopg.connect(dsn, autocommit=True) as conn:  # start from an empty database
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")
    settings = Settings(database_url=dsn)
    results = await asyncio.gather(*[migrate(dsn, settings) for _ in range(4)])
    applied = sorted(results, key=len)
    assert applied[-1] == [v for v, _ in migrations()] and all(r == [] for r in applied[:-1])
    assert await migrate(dsn, settings) == []


async def test_insert_wakes_workers_once_per_statement(direct, other):
    inbox = await listen(other, "sitemap_worker_wakeup")
    await direct.execute("INSERT INTO jobs (job_type) SELECT 'noop' FROM generate_series(1, 500)")
    await round_trip(other)
    assert inbox.items == [""]  # one constant-payload wake-up for 500 rows


async def test_scheduled_or_non_pending_inserts_do_not_wake(direct, other):
    inbox = await listen(other, "sitemap_worker_wakeup")
    await direct.execute(
        "INSERT INTO jobs (job_type, run_at) VALUES ('noop', now() + interval '1 hour')"
    )
    await direct.execute("INSERT INTO jobs (job_type, status) VALUES ('noop', 'completed')")
    await round_trip(other)
    assert inbox.items == []


async def test_status_changes_never_wake_workers_but_reach_the_status_channel(direct, other):
    job_id = await direct.fetchval("INSERT INTO jobs (job_type) VALUES ('noop') RETURNING id")
    wake = await listen(other, "sitemap_worker_wakeup")
    status = await listen(other, "sitemap_worker_status")
    await direct.execute("UPDATE jobs SET status = 'processing' WHERE id = $1", job_id)
    await direct.execute(
        "UPDATE jobs SET progress = 0.5 WHERE id = $1", job_id
    )  # not a status change
    await direct.execute("UPDATE jobs SET status = 'cancelled' WHERE id = $1", job_id)
    await round_trip(other)
    assert wake.items == []
    events = [json.loads(p) for p in status.items]
    assert events == [
        {"status": "processing", "ids": [job_id]},
        {"status": "cancelled", "ids": [job_id]},
    ]


async def test_status_channel_groups_a_batch_by_status_in_chunks(direct, other):
    await direct.execute("INSERT INTO jobs (job_type) SELECT 'noop' FROM generate_series(1, 1200)")
    status = await listen(other, "sitemap_worker_status")
    await direct.execute(
        "UPDATE jobs SET status = CASE WHEN id % 2 = 0 THEN 'cancelled' ELSE 'failed' END"
    )
    await round_trip(other)
    events = [json.loads(p) for p in status.items]
    assert sorted(len(e["ids"]) for e in events) == [100, 100, 500, 500]  # 600 each, chunked
    by_status = {
        s: sorted(i for e in events if e["status"] == s for i in e["ids"])
        for s in ("cancelled", "failed")
    }
    assert by_status["cancelled"] == list(range(2, 1201, 2))
    assert by_status["failed"] == list(range(1, 1201, 2))


async def test_wakeups_are_throttled_within_the_window(direct, other):
    inbox = await listen(other, "sitemap_worker_wakeup")
    await direct.execute("SELECT sitemap_worker_set_wakeup_window(60000)")
    for _ in range(20):
        await direct.execute("INSERT INTO jobs (job_type) VALUES ('noop')")
    await round_trip(other)
    assert len(inbox.items) <= 2  # one per 60 s bucket (two if a bucket edge fell inside)
    await direct.execute("SELECT sitemap_worker_set_wakeup_window(0.001)")
    for _ in range(5):
        await direct.execute("INSERT INTO jobs (job_type) VALUES ('noop')")
    await round_trip(other)
    assert len(inbox.items) >= 5  # a tiny window lets each insert notify


async def test_cancel_from_sql_sets_finished_at(direct):
    job_id = await direct.fetchval("INSERT INTO jobs (job_type) VALUES ('noop') RETURNING id")
    row = await direct.fetchrow(
        "UPDATE jobs SET status = 'cancelled' WHERE id = $1 RETURNING finished_at, updated_at",
        job_id,
    )
    assert row["finished_at"] is not None and row["updated_at"] == row["finished_at"]


async def _scan_rows(conn: asyncpg.Connection, urls_per_file: int) -> tuple[int, list[int]]:
    job_id = await conn.fetchval("INSERT INTO jobs (job_type) VALUES ('sitemap_scan') RETURNING id")
    files = [
        await conn.fetchval(
            "INSERT INTO sitemap_files (job_id, url, status) VALUES ($1, $2, 'ok') RETURNING id",
            job_id,
            f"https://a.test/{n}.xml",
        )
        for n in range(2)
    ]
    for file_id in files:
        await conn.execute(
            "INSERT INTO sitemap_urls (job_id, sitemap_file_id, loc)"
            " SELECT $1, $2, 'https://a.test/' || $2::bigint || '/' || g"
            "   FROM generate_series(1, $3) g",
            job_id,
            file_id,
            urls_per_file,
        )
    return job_id, files


async def test_url_rows_go_with_their_file_and_job_without_foreign_keys(direct):
    """Migration 0007 dropped sitemap_urls' per-row FK checks; its triggers keep the cascade."""
    keys = await direct.fetchval(
        "SELECT count(*) FROM pg_constraint"
        " WHERE conrelid = 'sitemap_urls'::regclass AND contype = 'f'"
    )
    assert keys == 0
    kept_job, _ = await _scan_rows(direct, 3)
    job_id, (first, second) = await _scan_rows(direct, 5)
    await direct.execute("DELETE FROM sitemap_files WHERE id = $1", first)
    left = dict(
        await direct.fetch(
            "SELECT sitemap_file_id, count(*) FROM sitemap_urls WHERE job_id = $1 GROUP BY 1",
            job_id,
        )
    )
    assert left == {second: 5}
    await direct.execute("DELETE FROM jobs WHERE id = $1", job_id)
    per_job = dict(await direct.fetch("SELECT job_id, count(*) FROM sitemap_urls GROUP BY 1"))
    assert per_job == {kept_job: 6}
    await direct.execute("TRUNCATE jobs CASCADE")
    assert await direct.fetchval("SELECT count(*) FROM sitemap_urls") == 0


async def test_a_role_without_rights_on_url_rows_can_still_delete_files_and_jobs(direct):
    """The trigger deletes URL rows as the tables' owner, as the foreign key's cascade did."""
    job_id, (first, _) = await _scan_rows(direct, 3)
    role = f"jobs_only_{job_id}"
    await direct.execute(f"CREATE ROLE {role}")
    try:
        await direct.execute(f"GRANT SELECT, DELETE ON jobs, sitemap_files TO {role}")
        async with direct.transaction():
            await direct.execute(f"SET LOCAL ROLE {role}")
            await direct.execute("DELETE FROM sitemap_files WHERE id = $1", first)
            await direct.execute("DELETE FROM jobs WHERE id = $1", job_id)
        assert (
            await direct.fetchval("SELECT count(*) FROM sitemap_urls WHERE job_id = $1", job_id)
            == 0
        )
    finally:
        await direct.execute(f"DROP OWNED BY {role}; DROP ROLE {role}")


async def test_migration_0008_brings_old_rows_inside_the_bounds_and_ends_stuck_batches(pg_server):
    """On a database at 0007 holding a row that blocked every claim, out-of-range values
    and a batch left 'processing' with all its children ended."""
    with scratch_database(pg_server, "m8_") as name:
        dsn = admin_dsn(pg_server, name)
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(q("migrations_table"))
            for version, text in migrations():
                if version >= "0008":
                    break
                await conn.execute(text)
                await conn.execute(q("record_migration"), version)
            poison = await conn.fetchval(
                "INSERT INTO jobs (job_type, payload, attempts)"
                " VALUES ('noop', '{}', 2147483647) RETURNING id"
            )
            greedy = await conn.fetchval(
                "INSERT INTO jobs (job_type, max_attempts, priority)"
                " VALUES ('noop', 5000, 2147483647) RETURNING id"
            )
            stuck = await conn.fetchval(
                "INSERT INTO jobs (job_type, payload, status)"
                " VALUES ('sitemap_batch', '{}', 'processing') RETURNING id"
            )
            await conn.execute(
                "INSERT INTO jobs (job_type, parent_id, status, result) VALUES"
                " ('sitemap_scan', $1, 'completed', '{\"url_count\": 4}'),"
                " ('sitemap_scan', $1, 'failed', NULL)",
                stuck,
            )
            applied = await migrate(dsn, Settings(database_url=dsn))
            assert "0008_batch_counters" in applied
            invalid = await conn.fetchval(
                "SELECT count(*) FROM pg_constraint"
                " WHERE conrelid = 'jobs'::regclass AND NOT convalidated"
            )
            assert invalid == 0
            rows = {r["id"]: r for r in await conn.fetch("SELECT * FROM jobs")}
            assert rows[poison]["attempts"] == 10000
            assert (rows[greedy]["max_attempts"], rows[greedy]["priority"]) == (1000, 1000000)
            batch = rows[stuck]
            assert (batch["status"], batch["progress"], batch["children_total"]) == (
                "completed",
                1,
                2,
            )
            result = json.loads(batch["result"])
            assert (result["completed"], result["failed"], result["url_count"]) == (1, 1, 4)
            # The row that blocked every claim now fails alone, with a message.
            claimed = [
                r["id"] for r in await conn.fetch("SELECT * FROM sitemap_worker_claim('w', 10, 30)")
            ]
            assert claimed == [greedy]
            row = await conn.fetchrow("SELECT status, error FROM jobs WHERE id = $1", poison)
            assert row["status"] == "failed" and "limit of 10000" in row["error"]
        finally:
            await conn.close()


async def _held_job(conn: asyncpg.Connection, owner: str = "w1") -> int:
    return await conn.fetchval(
        "INSERT INTO jobs (job_type, status, owner, attempts, lease_expires_at)"
        " VALUES ('noop', 'processing', $1, 1, now() + interval '1 minute') RETURNING id",
        owner,
    )


# Each transition the worker makes, as its named query runs it: (query, arguments for
# job id and owner, the job's status afterwards).
TRANSITIONS = [
    ("fail_job", lambda i, o: (i, o, "boom"), "failed"),
    ("retry_job", lambda i, o: (i, o, "flaky", 60.0), "pending"),
    ("release_jobs", lambda i, o: (o, [i]), "pending"),
    ("complete_jobs", lambda i, o: (o, [i], ['{"n": 1}']), "completed"),
]


@pytest.mark.parametrize("name, args, after", TRANSITIONS, ids=[t[0] for t in TRANSITIONS])
async def test_each_transition_moves_only_its_owners_processing_job(direct, name, args, after):
    """The guard of every status function: another worker's job, or a job no longer
    processing (cancelled meanwhile), is left as it is and the answer is empty."""

    async def moved(job_id: int, owner: str) -> list[int]:  # a `:val` answers null for none
        return [r[0] for r in await direct.fetch(q(name), *args(job_id, owner)) if r[0] is not None]

    theirs = await _held_job(direct, "w2")
    assert await moved(theirs, "w1") == []
    cancelled = await _held_job(direct)
    await direct.execute("UPDATE jobs SET status = 'cancelled' WHERE id = $1", cancelled)
    assert await moved(cancelled, "w1") == []
    ours = await _held_job(direct)
    assert await moved(ours, "w1") == [ours]
    rows = {
        r["id"]: r
        for r in await direct.fetch(
            "SELECT id, status, owner, lease_expires_at, attempts, run_at > now() AS later"
            " FROM jobs WHERE id = ANY($1)",
            [theirs, cancelled, ours],
        )
    }
    assert (rows[theirs]["status"], rows[theirs]["owner"]) == ("processing", "w2")
    assert rows[cancelled]["status"] == "cancelled"
    assert (rows[ours]["status"], rows[ours]["owner"], rows[ours]["lease_expires_at"]) == (
        after,
        None,
        None,
    )
    if name == "release_jobs":
        assert rows[ours]["attempts"] == 0  # the attempt it was on is given back
    if name == "retry_job":
        assert rows[ours]["later"]  # after the backoff


async def test_the_claim_fails_a_lost_job_with_no_attempts_left(direct):
    lost = await direct.fetchval(
        "INSERT INTO jobs (job_type, status, owner, attempts, max_attempts, lease_expires_at)"
        " VALUES ('noop', 'processing', 'dead', 3, 3, now() - interval '1 second') RETURNING id"
    )
    assert await direct.fetch(q("end_and_claim"), "w1", [], [], 5, 60.0, []) == []
    row = await direct.fetchrow("SELECT status, owner, error FROM jobs WHERE id = $1", lost)
    assert (row["status"], row["owner"]) == ("failed", None)
    assert "lease expired" in row["error"] and "3 of 3" in row["error"]
