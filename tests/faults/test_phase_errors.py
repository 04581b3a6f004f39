"""A database error inside a scan's phase, in a real worker process: the job ends with the
database's own message in `jobs.error` (written on a fresh pooled connection, since the
phase's transaction is aborted), nothing of the failed phase is committed, and the worker's
pool is left healthy: the same process completes new jobs, no connection of it is left
`idle in transaction`, and it never holds more than pool size + 1 (listener) connections.

Two errors: a statement timeout (transient: retried, then failed after max_attempts) made
by the test holding a lock the phase needs, and a check-constraint violation (permanent:
failed on the first attempt) made by a crafted sitemap."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest

from tests.support.locks import table_locked
from tests.support.processes import WorkerProcess
from tests.support.sites import Site
from tests.support.waits import StatusWatcher

NS = 'xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"'
CONCURRENCY = 4
POOL_SIZE = CONCURRENCY + 3  # WORKER_POOL_SIZE=0: concurrency + 3
ENV = {"WORKER_ALLOW_PRIVATE_NETWORKS": "true", "WORKER_CONCURRENCY": str(CONCURRENCY)}
Spawn = Callable[..., Awaitable[WorkerProcess]]


def urlset(locs: list[str]) -> bytes:
    body = "".join(f"<url><loc>{loc}</loc></url>" for loc in locs)
    return f'<?xml version="1.0" encoding="UTF-8"?><urlset {NS}>{body}</urlset>'.encode()


@pytest.fixture
async def site() -> AsyncIterator[Site]:
    async with Site() as s:
        yield s


async def enqueue_scan(conn: asyncpg.Connection, domain: str) -> int:
    return await conn.fetchval(
        "INSERT INTO jobs (job_type, payload) VALUES ('sitemap_scan', $1::jsonb) RETURNING id",
        json.dumps({"domain": domain}),
    )


def job_statuses(watcher: StatusWatcher, job_id: int) -> list[str]:
    return [status for jid, status in watcher.events if jid == job_id]


async def worker_backends(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """The worker's connections to this database, as the server sees them (`conn` must be
    outside a transaction: the view is a per-transaction snapshot)."""
    return await conn.fetch(
        "SELECT pid, application_name, state, clock_timestamp() - state_change AS for"
        "  FROM pg_stat_activity WHERE datname = current_database()"
        "   AND application_name IN ('sitemap-worker', 'sitemap-worker-listener')"
    )


async def assert_pool_sane(conn: asyncpg.Connection) -> None:
    """At most pool size + 1 connections, exactly one listener, and no transaction left
    open: a claim or phase is `idle in transaction` for a moment between two statements,
    so only one older than a second counts as left behind."""
    rows = await worker_backends(conn)
    assert len(rows) <= POOL_SIZE + 1, [dict(r) for r in rows]
    assert sum(r["application_name"] == "sitemap-worker-listener" for r in rows) == 1
    stuck = [
        dict(r)
        for r in rows
        if r["state"].startswith("idle in transaction") and r["for"].total_seconds() > 1
    ]
    assert not stuck, stuck


async def assert_worker_still_serves(
    worker: WorkerProcess, conn: asyncpg.Connection, watcher: StatusWatcher, site: Site
) -> None:
    """After the error the same process completes a clean scan and more noops than it has
    pooled connections (each needs a claim and a final write)."""
    locs = [site.url(f"/ok/{i}") for i in range(50)]
    site.add("/sitemap.xml", urlset(locs))
    scan_id = await enqueue_scan(conn, site.origin)
    noops = [
        r["id"]
        for r in await conn.fetch(
            "INSERT INTO jobs (job_type) SELECT 'noop' FROM generate_series(1, $1) RETURNING id",
            POOL_SIZE * 4,
        )
    ]
    rows = await watcher.wait_for([scan_id, *noops], ("completed", "failed"), timeout=30)
    assert all(r["status"] == "completed" for r in rows), [
        dict(r) for r in rows if r["status"] != "completed"
    ]
    assert all(r["attempts"] == 1 for r in rows)
    assert await conn.fetchval("SELECT count(*) FROM sitemap_urls WHERE job_id = $1", scan_id) == 50
    assert worker.proc.returncode is None
    await worker.wait_for_line(rf"job {scan_id} sitemap_scan completed")
    await assert_pool_sane(conn)


async def test_statement_timeout_in_a_phase_retries_then_fails_and_pool_stays_healthy(
    spawn: Spawn, direct: asyncpg.Connection, direct_dsn: str, watcher: StatusWatcher, site: Site
) -> None:
    """The test holds ACCESS EXCLUSIVE on sitemap_urls, so the scan's insert waits until
    its 500 ms statement timeout cancels it (SQLSTATE 57014). That is transient: the job is
    retried (back to pending, then claimed again) and fails after its third attempt with
    the database's message; no URL is stored."""
    site.add("/sitemap.xml", urlset([site.url(f"/p/{i}") for i in range(50)]))
    worker = await spawn("run", WORKER_STATEMENT_TIMEOUT="500ms", **ENV)
    async with table_locked(direct_dsn, "sitemap_urls_stored"):
        job_id = await enqueue_scan(direct, site.origin)
        [row] = await watcher.wait_for(job_id, "failed", timeout=30)
        await assert_pool_sane(direct)  # the lock is still held: nothing waits on it now
    assert row["attempts"] == 3 and row["owner"] is None
    assert row["error"].startswith("database error 57014: "), row["error"]
    assert "statement timeout" in row["error"], row["error"]
    assert job_statuses(watcher, job_id) == ["processing", "pending"] * 2 + ["processing", "failed"]
    assert await direct.fetchval("SELECT count(*) FROM sitemap_urls WHERE job_id = $1", job_id) == 0
    await worker.wait_for_line(rf"job {job_id} sitemap_scan failed after .*57014")
    await assert_worker_still_serves(worker, direct, watcher, site)


async def test_check_violation_from_a_crafted_sitemap_fails_at_once_and_pool_stays_healthy(
    spawn: Spawn, direct: asyncpg.Connection, watcher: StatusWatcher, site: Site
) -> None:
    """A constraint the test adds to its own database refuses one URL of the sitemap; the
    insert of its chunk fails with SQLSTATE 23514, a data error that retrying cannot fix:
    the job fails on its first attempt, naming the constraint, and the whole chunk is
    rolled back (none of the 20 URLs stored)."""
    await direct.execute(
        "ALTER TABLE sitemap_urls_stored ADD CONSTRAINT fault_no_forbidden"
        " CHECK (loc NOT LIKE '%/forbidden%')"
    )
    locs = [site.url(f"/p/{i}") for i in range(19)] + [site.url("/forbidden")]
    site.add("/sitemap.xml", urlset(locs))
    worker = await spawn("run", **ENV)
    job_id = await enqueue_scan(direct, site.origin)
    [row] = await watcher.wait_for(job_id, ("failed", "completed"), timeout=20)
    assert row["status"] == "failed" and row["attempts"] == 1 and row["owner"] is None
    assert row["error"].startswith("database error 23514: "), row["error"]
    assert "fault_no_forbidden" in row["error"], row["error"]
    assert job_statuses(watcher, job_id) == ["processing", "failed"]
    assert await direct.fetchval("SELECT count(*) FROM sitemap_urls WHERE job_id = $1", job_id) == 0
    await assert_pool_sane(direct)
    await assert_worker_still_serves(worker, direct, watcher, site)


async def test_many_failing_phases_at_once_leave_no_connection_behind(
    spawn: Spawn, direct: asyncpg.Connection, watcher: StatusWatcher, site: Site
) -> None:
    """Every slot fails in a phase at the same time (2 x concurrency scans, all refused by
    the constraint): each failure is written, and the pool ends with no aborted or open
    transaction and no more connections than its size."""
    await direct.execute(
        "ALTER TABLE sitemap_urls_stored ADD CONSTRAINT fault_no_forbidden"
        " CHECK (loc NOT LIKE '%/forbidden%')"
    )
    site.add("/sitemap.xml", urlset([site.url("/forbidden")]))
    worker = await spawn("run", **ENV)
    started = time.monotonic()
    ids = [await enqueue_scan(direct, site.origin) for _ in range(CONCURRENCY * 2)]
    rows = await watcher.wait_for(ids, ("failed", "completed"), timeout=30)
    assert all(
        r["status"] == "failed" and r["error"].startswith("database error 23514") for r in rows
    ), [dict(r) for r in rows]
    print(f"\n{len(ids)} failing scans ended in {time.monotonic() - started:.2f} s")
    await assert_pool_sane(direct)
    await asyncio.wait_for(assert_worker_still_serves(worker, direct, watcher, site), 40)


async def test_nul_byte_in_one_line_of_a_text_sitemap_skips_that_line(
    spawn: Spawn, direct: asyncpg.Connection, watcher: StatusWatcher, site: Site
) -> None:
    """A text sitemap with a NUL byte in one line after its first KiB: PostgreSQL text
    cannot hold NUL, so that URL cannot be stored; the scanner should skip the line (as
    it skips any other unusable line) rather than fail the site's whole scan on the
    database's 22021."""
    good = [site.url(f"/page/{i:04d}") for i in range(100)]
    body = "\n".join([*good[:50], site.url("/bad\x00line"), *good[50:]]) + "\n"
    site.add("/sitemap.txt", body, content_type="text/plain")
    await spawn("run", **ENV)
    job_id = await enqueue_scan(direct, site.origin)
    [row] = await watcher.wait_for(job_id, ("failed", "completed"), timeout=20)
    assert row["status"] == "completed", row["error"]
    stored = {
        r["loc"]
        for r in await direct.fetch("SELECT loc FROM sitemap_urls WHERE job_id = $1", job_id)
    }
    assert stored == set(good)


async def add_forbidding_constraint(conn: asyncpg.Connection) -> None:
    await conn.execute(
        "ALTER TABLE sitemap_urls_stored ADD CONSTRAINT fault_no_forbidden"
        " CHECK (loc NOT LIKE '%/forbidden%')"
    )


async def test_a_scan_failed_in_one_file_stops_fetching_the_others(
    spawn: Spawn, direct: asyncpg.Connection, watcher: StatusWatcher, site: Site
) -> None:
    """Two files fetched together; one fails in its phase while the other's response is
    still held by the site. Once the job has failed, its worker must let go of the other
    request (the site sees the connection close), not keep it for up to the read
    timeout (set to a minute here)."""
    await add_forbidding_constraint(direct)
    site.add("/robots.txt", f"Sitemap: {site.url('/bad.xml')}\nSitemap: {site.url('/slow.xml')}\n")
    site.add("/bad.xml", urlset([site.url("/forbidden")]))
    release_bad = site.hold("/bad.xml")
    site.add("/slow.xml", urlset([site.url("/p/1")]))
    release_slow = site.hold("/slow.xml")
    await spawn("run", WORKER_FETCH_READ_TIMEOUT="60", **ENV)
    job_id = await enqueue_scan(direct, site.origin)
    async with asyncio.timeout(15):
        await site.arrival("/slow.xml").wait()
        await site.arrival("/bad.xml").wait()
    release_bad.set()  # bad.xml fails now, with slow.xml certainly in flight
    [row] = await watcher.wait_for(job_id, ("failed", "completed"), timeout=20)
    assert row["status"] == "failed" and "23514" in row["error"]
    deadline = time.monotonic() + 5  # bounded poll: a closed connection sends no event here
    while site.in_flight and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    in_flight = site.in_flight
    release_slow.set()
    assert in_flight == 0, "the failed job's other fetch is still open"


async def test_a_failed_scan_leaves_no_unfinished_file_reading_ok(
    spawn: Spawn, direct: asyncpg.Connection, watcher: StatusWatcher, site: Site
) -> None:
    """After a scan failed in a phase, every sitemap_files row either was finished or says
    it was not: none reads status 'ok' without an HTTP status."""
    await add_forbidding_constraint(direct)
    site.add("/sitemap.xml", urlset([site.url("/forbidden")]))
    await spawn("run", **ENV)
    job_id = await enqueue_scan(direct, site.origin)
    [row] = await watcher.wait_for(job_id, ("failed", "completed"), timeout=20)
    assert row["status"] == "failed"
    rows = await direct.fetch(
        "SELECT url, status, kind, http_status FROM sitemap_files WHERE job_id = $1", job_id
    )
    assert rows
    assert not [dict(r) for r in rows if r["status"] == "ok" and r["http_status"] is None]


@pytest.mark.slow
async def test_statement_timeouts_in_many_scans_then_a_busy_queue(
    spawn: Spawn, direct: asyncpg.Connection, direct_dsn: str, watcher: StatusWatcher, site: Site
) -> None:
    """Twelve scans (3 x concurrency) all time out in their phases, three attempts each,
    while the test holds the lock; then the lock goes and 2,000 noops and 10 scans go
    through the same process with the pool sane throughout."""
    site.add("/sitemap.xml", urlset([site.url(f"/p/{i}") for i in range(50)]))
    worker = await spawn("run", WORKER_STATEMENT_TIMEOUT="500ms", **ENV)
    async with table_locked(direct_dsn, "sitemap_urls_stored"):
        ids = [await enqueue_scan(direct, site.origin) for _ in range(CONCURRENCY * 3)]
        rows = await watcher.wait_for(ids, ("failed", "completed"), timeout=90)
        await assert_pool_sane(direct)
    assert all(
        r["status"] == "failed" and r["attempts"] == 3 and "57014" in r["error"] for r in rows
    ), [dict(r) for r in rows]
    scans = [await enqueue_scan(direct, site.origin) for _ in range(10)]
    await direct.execute("INSERT INTO jobs (job_type) SELECT 'noop' FROM generate_series(1, 2000)")
    await watcher.wait_until(
        "SELECT count(*) = 2010 FROM jobs WHERE status = 'completed'", timeout=90
    )
    assert (
        await direct.fetchval(
            "SELECT count(*) FROM sitemap_urls WHERE job_id = ANY($1::bigint[])", scans
        )
        == 500
    )
    assert worker.proc.returncode is None
    await assert_pool_sane(direct)
