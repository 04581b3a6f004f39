"""`kill -9` of a real worker at chosen points of a sitemap scan; another worker finishes the
job once the lease (3 s) has expired. What must hold at every point: each page URL of the
site stored exactly once (none lost, none twice), one finished `sitemap_files` row per
document, exactly one `completed` event, and `attempts` = 2 (one kill, one success).

The points are reached by events, not sleeps: the site holds a response until the test has
killed the worker (`Site.hold`, `Site.add_split`) and says when a request arrived
(`Site.arrival`); the final status write is held by a lock the test owns."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest

from tests.support.processes import WorkerProcess
from tests.support.sites import Site
from tests.support.waits import StatusWatcher

NS = 'xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"'
SCAN_ENV = {"WORKER_ALLOW_PRIVATE_NETWORKS": "true"}
Spawn = Callable[..., Awaitable[WorkerProcess]]


def urlset(locs: list[str]) -> bytes:
    body = "".join(f"<url><loc>{loc}</loc></url>" for loc in locs)
    return f'<?xml version="1.0" encoding="UTF-8"?><urlset {NS}>{body}</urlset>'.encode()


def sitemap_index(locs: list[str]) -> bytes:
    body = "".join(f"<sitemap><loc>{loc}</loc></sitemap>" for loc in locs)
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><sitemapindex {NS}>{body}</sitemapindex>'.encode()
    )


def pages(site: Site, prefix: str, n: int) -> list[str]:
    return [site.url(f"/{prefix}/page-{i:05d}") for i in range(n)]


@pytest.fixture
async def site() -> AsyncIterator[Site]:
    async with Site() as s:
        yield s


async def enqueue_scan(conn: asyncpg.Connection, domain: str, **payload: object) -> int:
    return await conn.fetchval(
        "INSERT INTO jobs (job_type, payload) VALUES ('sitemap_scan', $1::jsonb) RETURNING id",
        json.dumps({"domain": domain, **payload}),
    )


async def poll(conn: asyncpg.Connection, sql: str, *args: object, timeout: float = 20.0) -> object:
    """Bounded poll for a state that sends no notification (rows stored mid-scan, a lock
    wait in pg_stat_activity): re-read every 20 ms until truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = await conn.fetchval(sql, *args)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {timeout} s: {sql} {args}")
        await asyncio.sleep(0.02)


async def kill(worker: WorkerProcess) -> None:
    """SIGKILL: no cleanup, no final write, sockets simply close."""
    worker.proc.kill()
    assert await worker.wait(10) == -9


async def finish_elsewhere(spawn: Spawn, watcher: StatusWatcher, job_id: int) -> asyncpg.Record:
    """A second worker re-claims the job once the dead one's lease has expired."""
    await spawn("run", **SCAN_ENV)
    [row] = await watcher.wait_for(job_id, ("completed", "failed"), timeout=45)
    assert row["status"] == "completed", row["error"]
    return row


async def check_scan(
    conn: asyncpg.Connection,
    watcher: StatusWatcher,
    job_id: int,
    expected: set[str],
    files: dict[str, int],
    attempts: int = 2,
) -> None:
    """The invariants after a kill and a re-run: every URL once, no URL lost, one finished
    row per document (`files`: url -> page URLs it lists, 0 for an index), one completion,
    and `attempts` (one per kill, plus the run that finished)."""
    job = await conn.fetchrow("SELECT * FROM jobs WHERE id = $1", job_id)
    assert job["status"] == "completed" and job["attempts"] == attempts, dict(job)
    assert job["owner"] is None and job["progress"] == 1
    locs = [
        r["loc"] for r in await conn.fetch("SELECT loc FROM sitemap_urls WHERE job_id = $1", job_id)
    ]
    dupes = [loc for loc, n in Counter(locs).items() if n > 1]
    assert not dupes, f"stored twice: {dupes[:5]}"
    assert set(locs) == expected, (
        f"lost {len(expected - set(locs))}, unexpected {len(set(locs) - expected)}"
    )
    rows = await conn.fetch("SELECT * FROM sitemap_files WHERE job_id = $1", job_id)
    by_url = Counter(r["url"] for r in rows)
    assert max(by_url.values()) == 1, f"one document, several rows: {by_url.most_common(3)}"
    unfinished = [r["url"] for r in rows if r["http_status"] is None]
    assert not unfinished, f"rows left half-written by the killed worker: {unfinished}"
    ok = {r["url"]: r for r in rows if r["status"] == "ok"}
    for url, count in files.items():
        assert url in ok, f"{url} not stored as ok: {[dict(r) for r in rows if r['url'] == url]}"
        assert ok[url]["url_count"] == count and ok[url]["http_status"] == 200, dict(ok[url])
    # every row not among the site's documents is a well-known probe that got its 404
    assert {r["http_status"] for r in rows if r["url"] not in files} <= {404}
    completions = [e for e in watcher.events if e == (job_id, "completed")]
    assert len(completions) == 1, watcher.events


async def test_kill_after_claim_while_robots_txt_is_held(
    spawn: Spawn, direct: asyncpg.Connection, watcher: StatusWatcher, site: Site
) -> None:
    """Killed after the claim, before anything was stored: the re-run does it all."""
    a, b = pages(site, "a", 300), pages(site, "b", 300)
    site.add("/robots.txt", f"Sitemap: {site.url('/index.xml')}\n")
    site.add("/index.xml", sitemap_index([site.url("/a.xml"), site.url("/b.xml")]))
    site.add("/a.xml", urlset(a))
    site.add("/b.xml", urlset(b))
    release = site.hold("/robots.txt")
    worker = await spawn("run", **SCAN_ENV)
    job_id = await enqueue_scan(direct, site.origin)
    async with asyncio.timeout(15):
        await site.arrival("/robots.txt").wait()
    row = await direct.fetchrow("SELECT status, attempts, owner FROM jobs WHERE id = $1", job_id)
    assert row["status"] == "processing" and row["attempts"] == 1 and row["owner"]
    await kill(worker)
    release.set()
    assert (
        await direct.fetchval("SELECT count(*) FROM sitemap_files WHERE job_id = $1", job_id) == 0
    )
    await finish_elsewhere(spawn, watcher, job_id)
    await check_scan(
        direct,
        watcher,
        job_id,
        set(a) | set(b),
        {site.url("/index.xml"): 0, site.url("/a.xml"): 300, site.url("/b.xml"): 300},
    )
    assert site.hits["/robots.txt"] == 2 and site.hits["/a.xml"] == 1


def split_site(site: Site, total: int = 5000, sent: int = 3000) -> tuple[list[str], asyncio.Event]:
    """robots.txt -> /big.xml of `total` URLs whose first `sent` URLs go out at once and
    the rest only on release: more than one insert chunk (2,000) is stored before the hold."""
    locs = pages(site, "big", total)
    body = urlset(locs)
    at = body.index(locs[sent].encode())
    site.add("/robots.txt", f"Sitemap: {site.url('/big.xml')}\n")
    return locs, site.add_split("/big.xml", body, at=at)


async def kill_mid_file(
    spawn: Spawn, direct: asyncpg.Connection, site: Site, **payload: object
) -> tuple[int, int]:
    """Start a scan of split_site, kill the worker once a first chunk of /big.xml is
    stored; returns (job id, URLs stored before the kill)."""
    worker = await spawn("run", **SCAN_ENV)
    job_id = await enqueue_scan(direct, site.origin, **payload)
    async with asyncio.timeout(15):
        await site.arrival("/big.xml").wait()
    stored = await poll(
        direct, "SELECT nullif(count(*), 0) FROM sitemap_urls WHERE job_id = $1", job_id
    )
    await kill(worker)
    return job_id, int(stored)


async def test_kill_mid_file_after_a_chunk_was_stored(
    spawn: Spawn, direct: asyncpg.Connection, watcher: StatusWatcher, site: Site
) -> None:
    """Killed with part of one file's URLs committed: the re-run stores only the rest."""
    locs, release = split_site(site)
    job_id, stored = await kill_mid_file(spawn, direct, site)
    assert 0 < stored < len(locs)
    assert (
        await direct.fetchval("SELECT count(*) FROM sitemap_urls WHERE job_id = $1", job_id)
        == stored
    )
    assert (
        await direct.fetchval(
            "SELECT http_status FROM sitemap_files WHERE job_id = $1 AND url = $2",
            job_id,
            site.url("/big.xml"),
        )
        is None
    )  # killed inside the file
    release.set()
    await finish_elsewhere(spawn, watcher, job_id)
    await check_scan(direct, watcher, job_id, set(locs), {site.url("/big.xml"): len(locs)})


async def wait_until_only_open(
    conn: asyncpg.Connection, job_id: int, held: str | list[str], done: str
) -> None:
    """Until `done` is finished and every other sitemap_files row of the job but the held
    documents' too (files go 4 at a time, so others fetched alongside them finish first): a
    bounded poll, as finishing a file changes no job status."""
    await poll(
        conn,
        "SELECT array_agg(url ORDER BY url) FILTER (WHERE http_status IS NULL) = $2::text[]"
        " AND bool_or(url = $3 AND http_status IS NOT NULL)"
        " FROM sitemap_files WHERE job_id = $1",
        job_id,
        sorted([held] if isinstance(held, str) else held),
        done,
    )


async def test_kill_between_files_of_an_index(
    spawn: Spawn, direct: asyncpg.Connection, watcher: StatusWatcher, site: Site
) -> None:
    """Killed with the first child of an index finished, the next four held open (every
    file slot busy) and the last never requested: the re-run fills in exactly what is
    missing."""
    names = "abcdef"
    children = {n: pages(site, n, 200) for n in names}
    site.add("/robots.txt", f"Sitemap: {site.url('/index.xml')}\n")
    site.add("/index.xml", sitemap_index([site.url(f"/{n}.xml") for n in names]))
    for n, locs in children.items():
        site.add(f"/{n}.xml", urlset(locs))
    held = "bcde"
    release = asyncio.Event()
    for n in held:
        site.hold(f"/{n}.xml", release)
    worker = await spawn("run", **SCAN_ENV)
    job_id = await enqueue_scan(direct, site.origin)
    async with asyncio.timeout(15):
        for n in held:
            await site.arrival(f"/{n}.xml").wait()
    await wait_until_only_open(
        direct, job_id, [site.url(f"/{n}.xml") for n in held], site.url("/a.xml")
    )
    await kill(worker)
    finished = {
        r["url"]
        for r in await direct.fetch(
            "SELECT url FROM sitemap_files WHERE job_id = $1 AND http_status = 200", job_id
        )
    }
    done = [n for n in names if site.url(f"/{n}.xml") in finished]
    assert done == ["a"], done
    stored = await direct.fetch("SELECT loc FROM sitemap_urls WHERE job_id = $1", job_id)
    assert {r["loc"] for r in stored} == set(children["a"])
    assert site.hits["/f.xml"] == 0  # the last child was never requested
    release.set()
    await finish_elsewhere(spawn, watcher, job_id)
    expected = {loc for locs in children.values() for loc in locs}
    files = {site.url("/index.xml"): 0} | {site.url(f"/{n}.xml"): 200 for n in names}
    await check_scan(direct, watcher, job_id, expected, files)
    assert site.hits["/a.xml"] == 2 and site.hits["/f.xml"] == 1


async def wait_for_lock_wait(conn: asyncpg.Connection, statement: str) -> list[str]:
    """Until one of the worker's pooled backends waits on a lock while running `statement`;
    returns the wait events (`advisory`, `tuple`, `transactionid`). pg_stat_activity sends
    no notification, so this is a bounded poll; `conn` must not be inside a transaction
    (the view is a snapshot taken once per transaction)."""
    return list(
        await poll(
            conn,
            "SELECT nullif(array_agg(wait_event::text), '{}') FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name = 'sitemap-worker'"
            " AND wait_event_type = 'Lock' AND query LIKE '%' || $1 || '%'",
            statement,
        )
    )


async def test_kill_during_final_status_write_of_a_scan(
    spawn: Spawn, direct: asyncpg.Connection, direct_dsn: str, watcher: StatusWatcher, site: Site
) -> None:
    """All work committed, the `completed` write blocked on a lock, then kill -9: the write
    is one statement in its own implicit transaction (issue 20), which the server already
    has whole, so once the lock goes it commits although its worker is gone; the job is
    completed once, by that write, with the same stored set, and never re-run.

    A row lock on the job row would block every phase's progress write too, so the test
    gates only the final write: a trigger on the status change waits on an advisory lock
    that the test's own open transaction holds."""
    locs = pages(site, "p", 500)
    site.add("/robots.txt", f"Sitemap: {site.url('/sitemap.xml')}\n")
    site.add("/sitemap.xml", urlset(locs))
    await direct.execute("""
        CREATE FUNCTION fault_gate() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN PERFORM pg_advisory_xact_lock(4242); RETURN NEW; END $$;
        CREATE TRIGGER fault_gate BEFORE UPDATE ON jobs FOR EACH ROW
            WHEN (OLD.status = 'processing' AND NEW.status <> 'processing')
            EXECUTE FUNCTION fault_gate();""")
    holder = await asyncpg.connect(direct_dsn)
    try:
        tx = holder.transaction()
        await tx.start()
        await holder.execute("SELECT pg_advisory_xact_lock(4242)")
        worker = await spawn("run", **SCAN_ENV)
        job_id = await enqueue_scan(direct, site.origin)
        assert await wait_for_lock_wait(direct, "sitemap_worker_complete") == ["advisory"]
        stored = await direct.fetchval(
            "SELECT count(*) FROM sitemap_urls WHERE job_id = $1", job_id
        )
        assert stored == len(locs)  # the work is all committed; only the status is not
        await kill(worker)
        await tx.rollback()  # the killed backend's UPDATE now runs and commits
    finally:
        await holder.close()
    await finish_elsewhere(spawn, watcher, job_id)
    await check_scan(
        direct, watcher, job_id, set(locs), {site.url("/sitemap.xml"): len(locs)}, attempts=1
    )


async def test_kill_during_final_write_blocked_by_a_row_lock_on_the_job(
    spawn: Spawn, direct: asyncpg.Connection, direct_dsn: str, watcher: StatusWatcher
) -> None:
    """The literal row-lock variant on a noop (no phases to block): the test holds
    `SELECT ... FOR UPDATE` on the job row, the worker's `completed` write waits on it
    (pg_stat_activity says so), kill -9, release: that write, a statement the server already
    has whole in its own implicit transaction (issue 20), commits; the job completes once
    and is not run again."""
    worker = await spawn("run")
    job_id = await direct.fetchval(
        "INSERT INTO jobs (job_type, payload) VALUES ('noop', '{\"seconds\": 1.5}') RETURNING id"
    )
    await watcher.wait_for(job_id, "processing")
    holder = await asyncpg.connect(direct_dsn)
    try:
        tx = holder.transaction()
        await tx.start()
        await holder.fetchrow("SELECT id FROM jobs WHERE id = $1 FOR UPDATE", job_id)
        waits = await wait_for_lock_wait(direct, "sitemap_worker_complete")
        assert len(waits) == 1 and waits[0] in ("tuple", "transactionid"), waits
        await kill(worker)
        await tx.rollback()
    finally:
        await holder.close()
    [row] = await watcher.wait_for(job_id, "completed", timeout=30)
    assert row["attempts"] == 1 and row["owner"] is None
    assert Counter(watcher.events)[(job_id, "completed")] == 1


@pytest.mark.slow
async def test_three_kills_at_wherever_a_large_scan_has_got_to(
    spawn: Spawn, direct: asyncpg.Connection, watcher: StatusWatcher, site: Site
) -> None:
    """An index of 20 files of 2,000 URLs; three workers in turn are killed once the job
    has 8,000, 16,000 and 24,000 URLs stored (wherever each one is in its walk, each
    re-run starting over from robots.txt), the last file held so that no run can finish
    before its kill; a fourth finishes. Attempts count 4, and the 40,000 URLs are all
    there, once each."""
    names = [f"c{i:02d}" for i in range(20)]
    children = {n: pages(site, n, 2000) for n in names}
    site.add("/robots.txt", f"Sitemap: {site.url('/index.xml')}\n")
    site.add("/index.xml", sitemap_index([site.url(f"/{n}.xml") for n in names]))
    for n, locs in children.items():
        site.add(f"/{n}.xml", urlset(locs))
    release = site.hold(f"/{names[-1]}.xml")
    job_id = await direct.fetchval(
        "INSERT INTO jobs (job_type, payload, max_attempts) VALUES ('sitemap_scan', $1::jsonb, 5)"
        " RETURNING id",
        json.dumps({"domain": site.origin}),
    )
    for attempt, threshold in enumerate((8000, 16000, 24000), start=1):
        worker = await spawn("run", **SCAN_ENV)
        await poll(
            direct,
            "SELECT count(*) >= $2 FROM sitemap_urls WHERE job_id = $1",
            job_id,
            threshold,
            timeout=60,
        )
        await kill(worker)
        row = await direct.fetchrow("SELECT status, attempts FROM jobs WHERE id = $1", job_id)
        assert row["status"] == "processing" and row["attempts"] == attempt, dict(row)
    release.set()
    await spawn("run", **SCAN_ENV)
    [row] = await watcher.wait_for(job_id, ("completed", "failed"), timeout=60)
    assert row["status"] == "completed" and row["attempts"] == 4, row["error"]
    files = {site.url("/index.xml"): 0} | {site.url(f"/{n}.xml"): 2000 for n in names}
    expected = {loc for locs in children.values() for loc in locs}
    await check_scan(direct, watcher, job_id, expected, files, attempts=4)


# -- what a re-run reports and caps -----------------------------------------------------------


async def test_result_url_count_after_kill_counts_urls_stored_before_it(
    spawn: Spawn, direct: asyncpg.Connection, watcher: StatusWatcher, site: Site
) -> None:
    """The result of a re-run job says how many URLs the job stored, not how many this
    attempt added."""
    locs, release = split_site(site)
    job_id, stored = await kill_mid_file(spawn, direct, site)
    release.set()
    row = await finish_elsewhere(spawn, watcher, job_id)
    assert await direct.fetchval(
        "SELECT count(*) FROM sitemap_urls WHERE job_id = $1", job_id
    ) == len(locs)
    assert json.loads(row["result"])["url_count"] == len(locs), (
        f"{stored} were stored before the kill"
    )


async def test_max_urls_holds_across_a_kill(
    spawn: Spawn, direct: asyncpg.Connection, watcher: StatusWatcher, site: Site
) -> None:
    """max_urls caps what the job stores, however many attempts it took: one file stored
    whole, the worker killed while the second is held, the re-run must stop at the cap."""
    cap = 4000
    first, second = pages(site, "one", 2000), pages(site, "two", 5000)
    site.add("/robots.txt", f"Sitemap: {site.url('/one.xml')}\nSitemap: {site.url('/two.xml')}\n")
    site.add("/one.xml", urlset(first))
    site.add("/two.xml", urlset(second))
    release = site.hold("/two.xml")
    worker = await spawn("run", **SCAN_ENV)
    job_id = await enqueue_scan(direct, site.origin, max_urls=cap)
    async with asyncio.timeout(15):
        await site.arrival("/two.xml").wait()
    await wait_until_only_open(direct, job_id, site.url("/two.xml"), site.url("/one.xml"))
    await kill(worker)
    assert (
        await direct.fetchval("SELECT count(*) FROM sitemap_urls WHERE job_id = $1", job_id) == 2000
    )
    release.set()
    await finish_elsewhere(spawn, watcher, job_id)
    total = await direct.fetchval("SELECT count(*) FROM sitemap_urls WHERE job_id = $1", job_id)
    assert total <= cap, f"{total} URLs stored with max_urls={cap}"
