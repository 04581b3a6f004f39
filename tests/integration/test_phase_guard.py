"""The end-of-phase guard (migration 0012) and the scan's writes that it made cheap: a phase
renews no lease and writes the job row only for progress, on a cadence; a lost or cancelled
job still stops its writes; a cancel waits for a phase in flight; the well-known paths a
site does not have are stored in one statement."""

from __future__ import annotations

import asyncio
import json

import asyncpg
import pytest

from tests.support.claimed import OWNER, claimed_context
from worker import context
from worker.engine import JobLoop
from worker.errors import JobLost
from worker.jobs import default_registry
from worker.scan.robots import WELL_KNOWN_PATHS
from worker.sql import q

NS = 'xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"'


def urlset(*locs: str) -> bytes:
    body = "".join(f"<url><loc>{loc}</loc></url>" for loc in locs)
    return f'<?xml version="1.0"?><urlset {NS}>{body}</urlset>'.encode()


def index(*locs: str) -> bytes:
    body = "".join(f"<sitemap><loc>{loc}</loc></sitemap>" for loc in locs)
    return f'<?xml version="1.0"?><sitemapindex {NS}>{body}</sitemapindex>'.encode()


@pytest.fixture
async def held(direct):
    await direct.execute("CREATE TABLE held (n int)")


async def job_row(direct, job_id):
    return await direct.fetchrow(
        "SELECT xmin::text AS version, progress, lease_expires_at, updated_at FROM jobs"
        " WHERE id = $1",
        job_id,
    )


async def test_a_phase_without_progress_leaves_the_job_row_alone(direct, pool, settings, held):
    ctx = await claimed_context(direct, pool, settings)
    before = await job_row(direct, ctx.job.id)
    await ctx.run_phase(lambda conn: conn.execute("INSERT INTO held VALUES (1)"))
    ctx.note_progress(0.4)  # not due yet: the job has only just started
    await ctx.run_phase(lambda conn: conn.execute("INSERT INTO held VALUES (2)"))
    assert await direct.fetchval("SELECT count(*) FROM held") == 2
    assert await job_row(direct, ctx.job.id) == before  # same row version, same lease


async def test_noted_progress_is_written_once_due_without_renewing_the_lease(
    direct, pool, settings, held, monkeypatch
):
    ctx = await claimed_context(direct, pool, settings)
    before = await job_row(direct, ctx.job.id)
    monkeypatch.setattr(context, "PROGRESS_EVERY", 0.0)
    ctx.note_progress(0.25)
    await ctx.run_phase(lambda conn: conn.execute("INSERT INTO held VALUES (1)"))
    after = await job_row(direct, ctx.job.id)
    assert after["progress"] == 0.25 and after["lease_expires_at"] == before["lease_expires_at"]
    await ctx.run_phase(lambda conn: conn.execute("INSERT INTO held VALUES (2)"))
    assert await job_row(direct, ctx.job.id) == after  # nothing new noted: nothing written
    # progress given to the phase itself is written at once, whatever the cadence
    monkeypatch.setattr(context, "PROGRESS_EVERY", 3600.0)
    await ctx.run_phase(lambda conn: conn.execute("INSERT INTO held VALUES (3)"), progress=0.5)
    assert (await job_row(direct, ctx.job.id))["progress"] == 0.5


@pytest.mark.parametrize("progress", [None, 0.5])
@pytest.mark.parametrize("change", ["owner = 'another-worker'", "status = 'cancelled'"])
async def test_a_job_no_longer_ours_writes_nothing(direct, pool, settings, held, progress, change):
    ctx = await claimed_context(direct, pool, settings)
    await direct.execute(f"UPDATE jobs SET {change} WHERE id = $1", ctx.job.id)
    with pytest.raises(JobLost):
        await ctx.run_phase(
            lambda conn: conn.execute("INSERT INTO held VALUES (1)"), progress=progress
        )
    assert await direct.fetchval("SELECT count(*) FROM held") == 0


async def test_a_cancel_waits_for_a_guarded_phase_to_commit(direct, direct_dsn, pool, settings):
    """The guard share-locks the row until the phase commits: a cancel (or a take-over)
    cannot commit between the check and the phase's commit."""
    ctx = await claimed_context(direct, pool, settings)
    phase = await asyncpg.connect(direct_dsn)
    try:
        async with phase.transaction():
            assert await phase.fetchval(q("guard_phase"), ctx.job.id, OWNER, None) == ctx.job.id
            await direct.execute("SET lock_timeout = '200ms'")
            with pytest.raises(asyncpg.LockNotAvailableError):
                await direct.execute(
                    "UPDATE jobs SET status = 'cancelled' WHERE id = $1", ctx.job.id
                )
            await direct.execute("RESET lock_timeout")
    finally:
        await phase.close()
    await direct.execute("UPDATE jobs SET status = 'cancelled' WHERE id = $1", ctx.job.id)
    assert await phase_guard(pool, ctx.job.id) is None  # cancelled: the guard says so


async def phase_guard(pool, job_id):
    async with pool.acquire() as conn, conn.transaction():
        return await conn.fetchval(q("guard_phase"), job_id, OWNER, None)


async def test_progress_and_files_show_while_a_scan_runs(
    site, pool, make_settings, direct, monkeypatch
):
    """With the cadence at zero every file's end carries its progress: while the last file
    is held, the job shows progress between 0 and 1, and its file rows say how many files
    are done."""
    monkeypatch.setattr(context, "PROGRESS_EVERY", 0.0)
    o = site.origin
    parts = [f"{o}/p{i}.xml" for i in range(4)]
    site.add("/robots.txt", f"Sitemap: {o}/index.xml\n")
    site.add("/index.xml", index(*parts))
    for i in range(4):
        site.add(f"/p{i}.xml", urlset(*(f"{o}/p{i}/{n}" for n in range(5))))
    release = site.hold("/p3.xml")
    job_id = await direct.fetchval(
        "INSERT INTO jobs (job_type, payload) VALUES ('sitemap_scan', $1::jsonb) RETURNING id",
        json.dumps({"domain": o}),
    )
    settings = make_settings(allow_private_networks=True)
    worker = asyncio.ensure_future(JobLoop(pool, settings, default_registry(), burst=True).run())
    try:
        async with asyncio.timeout(20):
            while True:  # no event tells of a progress write: poll the row
                [state] = await direct.fetch(q("job_states"), [job_id])
                if state["files_done"] >= 3 and state["progress"] > 0:
                    break
                await asyncio.sleep(0.02)
        assert state["status"] == "processing" and 0 < state["progress"] < 1
        assert state["urls"] >= 15
    finally:
        release.set()
        await asyncio.wait_for(worker, 20)
    row = await direct.fetchrow("SELECT status, progress FROM jobs WHERE id = $1", job_id)
    assert (row["status"], row["progress"]) == ("completed", 1)


async def test_missing_well_known_paths_are_stored_in_one_statement(
    site, pool, make_settings, direct
):
    o = site.origin
    site.add("/robots.txt", f"Sitemap: {o}/sitemap.xml\n")
    site.add("/sitemap.xml", urlset(*(f"{o}/p/{n}" for n in range(10))))
    job_id = await direct.fetchval(
        "INSERT INTO jobs (job_type, payload) VALUES ('sitemap_scan', $1::jsonb) RETURNING id",
        json.dumps({"domain": o}),
    )
    settings = make_settings(allow_private_networks=True)
    await asyncio.wait_for(JobLoop(pool, settings, default_registry(), burst=True).run(), 30)
    job = await direct.fetchrow("SELECT status, result::text FROM jobs WHERE id = $1", job_id)
    assert job["status"] == "completed"
    result = json.loads(job["result"])
    missing = await direct.fetch(
        "SELECT url, status, error, http_status, kind, url_count, xmin::text AS version"
        " FROM sitemap_files WHERE job_id = $1 AND source = 'well_known' ORDER BY id",
        job_id,
    )
    expected = {o + path for path in WELL_KNOWN_PATHS} - {f"{o}/sitemap.xml"}
    assert {r["url"] for r in missing} == expected
    assert result["well_known_missing"] == len(expected) and result["sitemap_count"] == 1
    assert {
        (r["status"], r["error"], r["http_status"], r["kind"], r["url_count"]) for r in missing
    } == {("error", "HTTP 404", 404, None, 0)}
    assert len({r["version"] for r in missing}) == 1  # all written by one transaction
    listed = await direct.fetchrow(
        "SELECT status, url_count, source FROM sitemap_files WHERE job_id = $1 AND url = $2",
        job_id,
        f"{o}/sitemap.xml",
    )
    assert tuple(listed) == ("ok", 10, "robots")
    assert (
        await direct.fetchval("SELECT count(*) FROM sitemap_urls WHERE job_id = $1", job_id) == 10
    )
