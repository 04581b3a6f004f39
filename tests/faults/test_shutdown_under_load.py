"""SIGTERM to a worker whose every slot is busy (noops holding for a minute, scans held by
their sites before or in the middle of a sitemap) with more jobs queued behind them.

The worker must stop claiming, hand the noops back at once (their hold gives way to a
shutdown), hand the scans back once the grace period (WORKER_SHUTDOWN_GRACE=3 s) less its
hand-over reserve runs out, and exit with status 0 within the grace: every unfinished job `pending` again, `owner` and
lease cleared, no attempt burned, and the queued jobs untouched. Another worker then
completes all of them exactly once, and the scans interrupted mid-file store each URL
once."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg
import pytest

from tests.support.processes import WorkerProcess
from tests.support.sites import Site
from tests.support.waits import StatusWatcher

NS = 'xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"'
GRACE = 3.0
ENV = {
    "WORKER_ALLOW_PRIVATE_NETWORKS": "true",
    "WORKER_SHUTDOWN_GRACE": str(GRACE),
    "WORKER_LEASE": "30",  # a long lease: nothing here may be re-claimed by expiry
    # every site is 127.0.0.1 (one host to the scanner's politeness gate): one slot per
    # held request, or the held scans would starve the others
    "WORKER_FETCH_PER_HOST_CONCURRENCY": "32",
}
Spawn = Callable[..., Awaitable[WorkerProcess]]


def urlset(locs: list[str]) -> bytes:
    body = "".join(f"<url><loc>{loc}</loc></url>" for loc in locs)
    return f'<?xml version="1.0" encoding="UTF-8"?><urlset {NS}>{body}</urlset>'.encode()


@dataclass
class HeldSite:
    """One site per scan, so each hold and arrival belongs to one job."""

    site: Site
    release: asyncio.Event
    locs: list[str]
    mid_file: bool  # held in the middle of /big.xml (else: at robots.txt)
    job_id: int = 0


async def make_site(stack: contextlib.AsyncExitStack, mid_file: bool) -> HeldSite:
    site = await stack.enter_async_context(Site())
    locs = [site.url(f"/p/{i:05d}") for i in range(3000)]
    body = urlset(locs)
    site.add("/robots.txt", f"Sitemap: {site.url('/big.xml')}\n")
    if mid_file:  # the first 2,500 URLs now (one chunk of 2,000 gets stored), the rest later
        release = site.add_split("/big.xml", body, at=body.index(locs[2500].encode()))
    else:
        site.add("/big.xml", body)
        release = site.hold("/robots.txt")
    return HeldSite(site, release, locs, mid_file)


async def poll(conn: asyncpg.Connection, sql: str, *args: object, timeout: float = 20.0) -> object:
    """Bounded poll for rows stored mid-scan (storing URLs sends no notification)."""
    deadline = time.monotonic() + timeout
    while not (value := await conn.fetchval(sql, *args)):
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {timeout} s: {sql} {args}")
        await asyncio.sleep(0.02)
    return value


async def sigterm_with_all_slots_busy(
    spawn: Spawn,
    direct: asyncpg.Connection,
    watcher: StatusWatcher,
    *,
    noops: int,
    scans: int,
    queued: int,
) -> None:
    concurrency = noops + scans
    async with contextlib.AsyncExitStack() as stack:
        sites = [await make_site(stack, mid_file=i % 2 == 1) for i in range(scans)]
        worker = await spawn("run", WORKER_CONCURRENCY=str(concurrency), **ENV)
        noop_ids = [
            r["id"]
            for r in await direct.fetch(
                "INSERT INTO jobs (job_type, payload) SELECT 'noop', '{\"seconds\": 60}'"
                " FROM generate_series(1, $1) RETURNING id",
                noops,
            )
        ]
        for held in sites:
            held.job_id = await direct.fetchval(
                "INSERT INTO jobs (job_type, payload) VALUES ('sitemap_scan', $1::jsonb) RETURNING id",
                json.dumps({"domain": held.site.origin}),
            )
        running = noop_ids + [h.job_id for h in sites]
        await watcher.wait_for(running, "processing", timeout=20)
        async with asyncio.timeout(20):
            for held in sites:
                await held.site.arrival("/big.xml" if held.mid_file else "/robots.txt").wait()
        for held in sites:
            if held.mid_file:  # a first chunk of its URLs is committed
                await poll(
                    direct, "SELECT count(*) > 0 FROM sitemap_urls WHERE job_id = $1", held.job_id
                )
        stored_before = await direct.fetchval("SELECT count(*) FROM sitemap_urls")
        queued_ids = [
            r["id"]
            for r in await direct.fetch(
                "INSERT INTO jobs (job_type) SELECT 'noop' FROM generate_series(1, $1) RETURNING id",
                queued,
            )
        ]

        began = time.monotonic()
        worker.signal(signal.SIGTERM)
        # A noop's hold gives way to the shutdown: handed back long before the grace ends.
        await watcher.wait_for(noop_ids, "pending", timeout=GRACE)
        released_noops_s = time.monotonic() - began
        assert worker.proc.returncode is None
        code = await worker.wait(timeout=GRACE + 15)
        exit_s = time.monotonic() - began
        print(
            f"\nshutdown: {concurrency} running + {queued} queued: noops back to pending after"
            f" {released_noops_s * 1000:.0f} ms, exit {code} after {exit_s:.2f} s (grace {GRACE:g} s)"
        )
        assert code == 0, worker.log()
        # The whole shutdown fits in the grace (jobs get it less the hand-over reserve).
        assert exit_s <= GRACE, f"exit took {exit_s:.2f} s with a {GRACE:g} s grace"

        rows = await direct.fetch("SELECT * FROM jobs WHERE id = ANY($1::bigint[])", running)
        assert all(
            r["status"] == "pending"
            and r["attempts"] == 0
            and r["owner"] is None
            and r["lease_expires_at"] is None
            for r in rows
        ), [dict(r) for r in rows]
        queued_rows = await direct.fetch(
            "SELECT * FROM jobs WHERE id = ANY($1::bigint[])", queued_ids
        )
        assert all(
            r["status"] == "pending" and r["attempts"] == 0 and r["started_at"] is None
            for r in queued_rows
        )  # nothing claimed once stopping
        assert (
            len([line for line in worker.lines if "released to pending (shutdown)" in line])
            == concurrency
        )
        assert await direct.fetchval("SELECT count(*) FROM sitemap_urls") == stored_before

        # The test shortens the noops' hold so the re-run takes no minute; nothing else changes.
        await direct.execute(
            "UPDATE jobs SET payload = '{\"seconds\": 0.1}' WHERE id = ANY($1::bigint[])", noop_ids
        )
        for held in sites:
            held.release.set()
        await spawn("run", **ENV)
        everything = running + queued_ids
        rows = await watcher.wait_for(everything, ("completed", "failed"), timeout=60)
        assert all(r["status"] == "completed" and r["attempts"] == 1 for r in rows), [
            dict(r) for r in rows if r["status"] != "completed" or r["attempts"] != 1
        ]
        completions = Counter(j for j, s in watcher.events if s == "completed")
        assert all(completions[j] == 1 for j in everything)
        for held in sites:
            locs = [
                r["loc"]
                for r in await direct.fetch(
                    "SELECT loc FROM sitemap_urls WHERE job_id = $1", held.job_id
                )
            ]
            assert len(locs) == len(set(locs)) and set(locs) == set(held.locs)


async def test_sigterm_with_ten_jobs_running(
    spawn: Spawn, direct: asyncpg.Connection, watcher: StatusWatcher
) -> None:
    """Short variant: 6 noops and 4 scans running (2 held at robots.txt, 2 mid-file), 50
    queued."""
    await sigterm_with_all_slots_busy(spawn, direct, watcher, noops=6, scans=4, queued=50)


@pytest.mark.slow
async def test_sigterm_with_forty_jobs_running(
    spawn: Spawn, direct: asyncpg.Connection, watcher: StatusWatcher
) -> None:
    """30 noops and 10 scans running, 2,000 queued."""
    await sigterm_with_all_slots_busy(spawn, direct, watcher, noops=30, scans=10, queued=2000)


async def test_scan_released_mid_file_reports_every_url_when_rerun(
    spawn: Spawn, direct: asyncpg.Connection, watcher: StatusWatcher
) -> None:
    """A scan handed back at shutdown with part of a file stored: its re-run's result
    counts the URLs of both runs (the job's URLs, not this run's new ones)."""
    async with contextlib.AsyncExitStack() as stack:
        held = await make_site(stack, mid_file=True)
        worker = await spawn("run", **{**ENV, "WORKER_SHUTDOWN_GRACE": "0.5"})
        job_id = await direct.fetchval(
            "INSERT INTO jobs (job_type, payload) VALUES ('sitemap_scan', $1::jsonb) RETURNING id",
            json.dumps({"domain": held.site.origin}),
        )
        await poll(direct, "SELECT count(*) > 0 FROM sitemap_urls WHERE job_id = $1", job_id)
        worker.signal(signal.SIGTERM)
        assert await worker.wait(timeout=15) == 0
        [row] = await watcher.wait_for(job_id, "pending")
        assert row["attempts"] == 0
        held.release.set()
        await spawn("run", **ENV)
        [row] = await watcher.wait_for(job_id, ("completed", "failed"), timeout=30)
    assert row["status"] == "completed" and row["attempts"] == 1
    assert (
        await direct.fetchval("SELECT count(*) FROM sitemap_urls WHERE job_id = $1", job_id) == 3000
    )
    assert json.loads(row["result"])["url_count"] == 3000
