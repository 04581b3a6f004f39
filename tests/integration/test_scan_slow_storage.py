"""A slow database is storage's problem, not the fetch's: while URL writes wait, a file's
fetch neither times out nor keeps its host slot (worker/jobs/sitemap/pipeline.py).

The database is made slow for real: a connection of the test's own holds a SHARE lock on
sitemap_urls, which lets reads through and makes every URL write wait until it ends."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import asyncpg
import pytest

from tests.support.locks import until_a_statement_waits_on_a_lock
from tests.support.sites import Site
from worker.engine import JobLoop
from worker.jobs import default_registry
from worker.jobs.sitemap.pipeline import QUEUED_CHUNKS
from worker.jobs.sitemap.store import CHUNK

NS = 'xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"'


def urlset(origin: str, name: str, count: int) -> bytes:
    body = "".join(f"<url><loc>{origin}/{name}/{i}</loc></url>" for i in range(count))
    return f'<?xml version="1.0"?><urlset {NS}>{body}</urlset>'.encode()


def index(*locs: str) -> bytes:
    body = "".join(f"<sitemap><loc>{loc}</loc></sitemap>" for loc in locs)
    return f'<?xml version="1.0"?><sitemapindex {NS}>{body}</sitemapindex>'.encode()


@asynccontextmanager
async def url_writes_wait(dsn: str) -> AsyncIterator[None]:
    """SHARE on sitemap_urls_stored (the URL rows): SELECTs go on, COPY and INSERT wait until the block ends."""
    holder = await asyncpg.connect(dsn)
    try:
        async with holder.transaction():
            await holder.execute("LOCK TABLE sitemap_urls_stored IN SHARE MODE")
            yield
    finally:
        await holder.close()


@pytest.fixture
async def site() -> AsyncIterator[Site]:
    async with Site() as s:
        yield s


def start_scan(pool: asyncpg.Pool, settings: Any, job_id: int) -> asyncio.Task[None]:
    worker = JobLoop(pool, settings, default_registry(), concurrency=1, burst=True)
    return asyncio.ensure_future(asyncio.wait_for(worker.run(), 60))


async def enqueue(direct: asyncpg.Connection, origin: str) -> int:
    return int(
        await direct.fetchval(
            "INSERT INTO jobs (job_type, payload) VALUES ('sitemap_scan', $1::jsonb) RETURNING id",
            json.dumps({"domain": origin}),
        )
    )


async def assert_all_stored(
    direct: asyncpg.Connection, job_id: int, counts: dict[str, int]
) -> None:
    job = await direct.fetchrow("SELECT status, error, result FROM jobs WHERE id = $1", job_id)
    assert job["status"] == "completed", job["error"]
    assert json.loads(job["result"])["url_count"] == sum(counts.values())
    files = {
        r["url"].rsplit("/", 1)[1]: r
        for r in await direct.fetch(
            "SELECT url, status, error, url_count, truncated FROM sitemap_files WHERE job_id = $1",
            job_id,
        )
    }
    for name, count in counts.items():
        row = files[name]
        assert (row["status"], row["error"], row["url_count"], row["truncated"]) == (
            "ok",
            None,
            count,
            False,
        )
    stored = await direct.fetchval("SELECT count(*) FROM sitemap_urls WHERE job_id = $1", job_id)
    assert stored == sum(counts.values())


async def test_a_file_waiting_on_storage_frees_its_host_slot_and_does_not_time_out(
    site, pool, make_settings, direct, direct_dsn
):
    """One request per host at a time. Each file holds more than a chunk (before, the body
    sink wrote that chunk itself, inside the fetch) but fits in the queue: both files are
    read while the first write waits, and neither reports the wait as a timeout."""
    o = site.origin
    size = 2 * CHUNK + 500
    site.add("/robots.txt", f"Sitemap: {o}/index.xml\n")
    site.add("/index.xml", index(f"{o}/a.xml", f"{o}/b.xml"))
    site.add("/a.xml", urlset(o, "a", size))
    site.add("/b.xml", urlset(o, "b", size))
    job_id = await enqueue(direct, o)
    settings = make_settings(
        allow_private_networks=True,
        fetch_per_host_concurrency=1,
        fetch_total_timeout=timedelta(seconds=2),
    )
    async with url_writes_wait(direct_dsn):
        run = start_scan(pool, settings, job_id)
        await until_a_statement_waits_on_a_lock(direct, "%sitemap_urls%", timeout=20)
        # b.xml can only be asked for once a.xml's fetch has let go of the host's one slot.
        await asyncio.wait_for(site.arrival("/b.xml").wait(), 20)
        assert not run.done()
    await run
    await assert_all_stored(direct, job_id, {"a.xml": size, "b.xml": size})


async def test_back_pressure_from_storage_does_not_count_against_the_fetch_deadline(
    site, pool, make_settings, direct, direct_dsn
):
    """A file bigger than the queue: its sink waits for room while writes wait on the lock,
    longer than the fetch's whole deadline and its read timeout. The wait is storage's:
    the file is read to its end once the lock goes, every URL stored, no error."""
    o = site.origin
    size = (QUEUED_CHUNKS + 4) * CHUNK
    site.add("/robots.txt", f"Sitemap: {o}/big.xml\n")
    site.add("/big.xml", urlset(o, "big", size))
    job_id = await enqueue(direct, o)
    settings = make_settings(
        allow_private_networks=True,
        fetch_total_timeout=timedelta(seconds=1),
        fetch_read_timeout=timedelta(seconds=1),
    )
    async with url_writes_wait(direct_dsn):
        run = start_scan(pool, settings, job_id)
        await until_a_statement_waits_on_a_lock(direct, "%sitemap_urls%", timeout=20)
        # Elapsed time is the point here: hold the writes back past both fetch limits.
        await asyncio.sleep(2.5)
        assert not run.done()
    await run
    await assert_all_stored(direct, job_id, {"big.xml": size})
