"""What a site sends can fail one file, never the whole scan; and a job's status and result
always agree with the rows it stored. Real sites on 127.0.0.1 (tests/support/sites.py), the
real worker, a real PostgreSQL; checked through jobs, sitemap_files and sitemap_urls."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import asyncpg
import pytest

from tests.support.sites import RawSite, free_port, response
from worker.database_urls import Urls
from worker.engine import JobLoop
from worker.jobs import default_registry
from worker.jobs.sitemap.store import CHUNK
from worker.metrics import PREFIX, Metrics
from worker.scan.robots import MAX_ROBOTS_BYTES

NS = 'xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"'
IMG = 'xmlns:image="http://www.google.com/schemas/sitemap-image/1.1"'


@pytest.fixture
def urls(direct_dsn: str) -> Urls:
    """Direct only: these tests are about HTTP input, not the pooler."""
    return Urls(direct_dsn, direct_dsn)


@pytest.fixture
async def raw():
    async with RawSite() as s:
        yield s


def urlset(*locs: str, extra: str = "") -> bytes:
    body = "".join(f"<url><loc>{loc}</loc>{extra}</url>" for loc in locs)
    return f'<?xml version="1.0"?><urlset {NS} {IMG}>{body}</urlset>'.encode()


class Scan:
    """One finished scan job as the public tables show it."""

    def __init__(
        self,
        job: asyncpg.Record,
        files: dict[str, asyncpg.Record],
        locs: list[str],
        metrics: Metrics,
    ) -> None:
        self.job, self.files, self.locs, self.metrics = job, files, locs, metrics
        self.result: dict[str, Any] = json.loads(job["result"]) if job["result"] else {}

    @property
    def fetches(self) -> float:
        value = self.metrics.registry.get_sample_value
        return sum(value(f"{PREFIX}_fetches_total", {"outcome": o}) or 0 for o in ("ok", "error"))


async def scan(
    pool, make_settings, direct, origin: str, *, retry_base: float = 600, **settings: Any
) -> Scan:
    """Run one scan to its end (or to its first retry: the backoff is long, so a retried job
    stays pending and the burst worker exits)."""
    job_id = await direct.fetchval(
        "INSERT INTO jobs (job_type, payload) VALUES ('sitemap_scan', $1::jsonb) RETURNING id",
        json.dumps({"domain": origin}),
    )
    metrics = Metrics()
    worker = JobLoop(
        pool,
        make_settings(
            allow_private_networks=True, retry_base=timedelta(seconds=retry_base), **settings
        ),
        default_registry(),
        concurrency=1,
        burst=True,
        metrics=metrics,
    )
    await asyncio.wait_for(worker.run(), 60)
    job = await direct.fetchrow("SELECT * FROM jobs WHERE id = $1", job_id)
    files = {
        r["url"].removeprefix(origin): r
        for r in await direct.fetch("SELECT * FROM sitemap_files WHERE job_id = $1", job_id)
    }
    locs = [
        r["loc"]
        for r in await direct.fetch(
            "SELECT loc FROM sitemap_urls WHERE job_id = $1 ORDER BY loc", job_id
        )
    ]
    return Scan(job, files, locs, metrics)


async def assert_agrees_with_rows(direct, done: Scan) -> None:
    """A job's status and result never contradict its stored rows."""
    job = done.job
    stored = len(done.locs)
    if stored:
        assert job["status"] == "completed", job["error"]
    if job["status"] == "completed":
        assert done.result["url_count"] == stored
        failed = sum(
            1
            for r in done.files.values()
            if r["status"] == "error"
            and not (r["source"] == "well_known" and r["http_status"] in (404, 410))
        )
        assert done.result["error_count"] == failed
        assert done.result["truncated"] == any(r["truncated"] for r in done.files.values())
    else:
        assert job["result"] is None and stored == 0
    not_finished = await direct.fetchval(
        "SELECT count(*) FROM sitemap_files WHERE job_id = $1 AND error LIKE 'not finished%'",
        job["id"],
    )
    assert not_finished == 0


# Item 3: one bad byte --------------------------------------------------------------------


async def test_non_utf8_header_bytes_are_cleaned_and_the_file_is_stored(
    raw, pool, make_settings, direct
):
    body = urlset(f"{raw.origin}/a", f"{raw.origin}/b")
    raw.add(
        "/sitemap.xml",
        response(
            200,
            body,
            content_type=b"text/xml; charset=\xff",
            headers=[(b"ETag", b'"\xff\xfe"'), (b"Last-Modified", b"Mon, 01 Jan 2024 \xe9 GMT")],
        ),
    )
    raw.add("/sitemap_index.xml", response(200, urlset(f"{raw.origin}/c")))
    done = await scan(pool, make_settings, direct, raw.origin)
    assert done.job["status"] == "completed", done.job["error"]
    row = done.files["/sitemap.xml"]
    assert (row["status"], row["error"], row["url_count"]) == ("ok", None, 2)
    assert row["etag"] == '"\ufffd\ufffd"'
    assert row["last_modified"] == "Mon, 01 Jan 2024 \ufffd GMT"
    assert row["content_type"] == "text/xml; charset=\ufffd"
    assert done.locs == [f"{raw.origin}/a", f"{raw.origin}/b", f"{raw.origin}/c"]
    await assert_agrees_with_rows(direct, done)


async def test_escaped_nul_text_in_an_extension_is_stored_as_written(
    site, pool, make_settings, direct
):
    o = site.origin
    title = r"C:\u0000 path"  # the six characters backslash, u, 0, 0, 0, 0: not a NUL
    site.add(
        "/sitemap.xml",
        urlset(
            f"{o}/a",
            extra=f"<image:image><image:loc>{o}/i.jpg</image:loc>"
            f"<image:title>{title}</image:title></image:image>",
        ),
    )
    site.add("/sitemap_index.xml", urlset(f"{o}/b"))
    done = await scan(pool, make_settings, direct, o)
    assert done.job["status"] == "completed", done.job["error"]
    images = json.loads(
        await direct.fetchval("SELECT images FROM sitemap_urls WHERE loc = $1", f"{o}/a")
    )
    assert images[0]["title"] == title
    assert done.locs == [f"{o}/a", f"{o}/b"]


# Item 4: robots.txt over 512 KiB ---------------------------------------------------------


async def test_sitemap_lines_of_a_huge_robots_txt_are_read_up_to_the_cap(
    site, pool, make_settings, direct
):
    o = site.origin
    head = f"User-agent: *\nSitemap: {o}/early.xml\n".encode()
    filler = b"Disallow: /" + b"x" * 100 + b"\n"
    body = head + filler * ((MAX_ROBOTS_BYTES - len(head) - 20) // len(filler))
    body += b"\n" * (MAX_ROBOTS_BYTES - 20 - len(body))
    straddling = f"Sitemap: {o}/partial-name-cut-by-the-cap.xml\n".encode()  # the cap cuts it
    body += straddling + filler * 1000 + f"Sitemap: {o}/late.xml\n".encode()
    assert MAX_ROBOTS_BYTES - 20 + len(straddling) > MAX_ROBOTS_BYTES  # the premise
    site.add("/robots.txt", body)
    site.add("/early.xml", urlset(f"{o}/e1", f"{o}/e2"))
    site.add("/late.xml", urlset(f"{o}/l1"))
    done = await scan(pool, make_settings, direct, o)
    assert done.job["status"] == "completed", done.job["error"]
    assert done.locs == [f"{o}/e1", f"{o}/e2"]
    assert done.files["/early.xml"]["source"] == "robots"
    assert not [u for u in done.files if u.startswith("/partial")]  # a cut line is not a URL
    assert "/late.xml" not in done.files
    assert any("robots.txt" in w and "512 KiB" in w for w in done.result["warnings"])
    await assert_agrees_with_rows(direct, done)


async def test_a_robots_txt_cut_short_gives_its_complete_lines(raw, pool, make_settings, direct):
    o = raw.origin
    body = f"Sitemap: {o}/a.xml\nSitemap: {o}/b.x".encode()  # the connection drops mid-line
    raw.add("/robots.txt", response(200, body, length=len(body) + 100, content_type=b"text/plain"))
    raw.add("/a.xml", response(200, urlset(f"{o}/p")))
    done = await scan(pool, make_settings, direct, o)
    assert done.job["status"] == "completed", done.job["error"]
    assert done.files["/a.xml"]["source"] == "robots" and "/b.x" not in done.files
    assert done.locs == [f"{o}/p"]
    [warning] = done.result["warnings"]
    assert warning.startswith("robots.txt was cut short (broken response body: ")
    assert warning.endswith(f"only the Sitemap: lines in its first {len(body)} bytes were read")


# Items 5 and 6: a flawed only sitemap; a body cut short ----------------------------------


async def test_only_sitemap_cut_by_the_download_cap_completes_with_its_urls(
    site, pool, make_settings, direct
):
    o = site.origin
    site.add("/sitemap.xml", urlset(*(f"{o}/page-{i:04}" for i in range(200))))
    done = await scan(pool, make_settings, direct, o, fetch_max_bytes=4096)
    assert done.job["status"] == "completed", done.job["error"]
    row = done.files["/sitemap.xml"]
    assert 0 < row["url_count"] < 200 and len(done.locs) == row["url_count"]
    assert row["status"] == "error" and row["truncated"]
    assert row["error"] == (
        f"download cap of 4,096 bytes reached: the file was cut short, {row['url_count']} URLs kept"
    )
    assert done.result["error_count"] == 1 and done.result["truncated"]
    await assert_agrees_with_rows(direct, done)


async def test_total_timeout_mid_body_is_an_error_that_keeps_the_urls(
    site, pool, make_settings, direct
):
    o = site.origin
    body = urlset(*(f"{o}/p{i}" for i in range(5)))
    site.add_split("/sitemap.xml", body, at=body.index(b"<url><loc>" + f"{o}/p4".encode()) + 14)
    done = await scan(pool, make_settings, direct, o, fetch_total_timeout=timedelta(seconds=1))
    assert done.job["status"] == "completed", done.job["error"]
    row = done.files["/sitemap.xml"]
    assert row["status"] == "error" and row["truncated"] and row["url_count"] == 4
    assert row["error"] == "timed out after 1 s: the file was cut short, 4 URLs kept"
    assert done.locs == sorted(f"{o}/p{i}" for i in range(4))
    await assert_agrees_with_rows(direct, done)


async def test_connection_dropped_mid_body_keeps_complete_lines_only(
    raw, pool, make_settings, direct
):
    o = raw.origin
    body = f"{o}/t1\n{o}/t2\n{o}/t3-cut-he".encode()  # the third line never ends
    raw.add("/sitemap.txt", response(200, body, length=len(body) + 500, content_type=b"text/plain"))
    done = await scan(pool, make_settings, direct, o)
    assert done.job["status"] == "completed", done.job["error"]
    row = done.files["/sitemap.txt"]
    assert row["status"] == "error" and row["truncated"] and row["url_count"] == 2
    assert row["error"] == (
        "broken response body: cut short, or a bad chunked or compressed encoding: "
        "the file was cut short, 2 URLs kept"
    )
    assert done.locs == [f"{o}/t1", f"{o}/t2"]
    await assert_agrees_with_rows(direct, done)


@pytest.mark.parametrize("flaw", ["stray bytes", "raw ampersand", "dropped", "cap"])
async def test_a_flawed_only_sitemap_never_contradicts_its_rows(
    raw, pool, make_settings, direct, flaw
):
    o = raw.origin
    good = urlset(*(f"{o}/p{i:03}" for i in range(100)))
    settings: dict[str, Any] = {}
    if flaw == "stray bytes":
        reply = response(200, good + b"\x00\xff junk <after/> the root")
    elif flaw == "raw ampersand":
        reply = response(200, good.replace(b"/p050<", b"/p050?a=1&b=2<"))
    elif flaw == "dropped":
        reply = response(200, good[: len(good) // 2], length=len(good))
    else:
        reply, settings = response(200, good), {"fetch_max_bytes": len(good) // 2}
    raw.add("/sitemap.xml", reply)
    done = await scan(pool, make_settings, direct, o, **settings)
    assert done.locs  # every flaw leaves at least the URLs before it
    await assert_agrees_with_rows(direct, done)
    row = done.files["/sitemap.xml"]
    if row["status"] == "error":
        assert done.result["error_count"] == 1 and f"{row['url_count']} URLs kept" in row["error"]


# Item 7 and queue item 7: unreachable hosts, transient and permanent failures ------------


async def test_a_refusing_host_is_asked_once_and_the_job_is_retried(pool, make_settings, direct):
    origin = f"http://127.0.0.1:{free_port()}"
    done = await scan(pool, make_settings, direct, origin)
    job = done.job
    assert job["status"] == "pending" and job["attempts"] == 1  # retried later, with backoff
    assert job["error"].startswith(f"no sitemap could be fetched: {origin} cannot be reached")
    assert "cannot connect to 127.0.0.1" in job["error"]
    assert done.fetches == 1  # robots.txt only, not the 16 well-known paths
    assert done.files == {}
    assert (job["updated_at"] - job["started_at"]).total_seconds() < 10  # generous: ~15 s before


async def test_a_scan_whose_every_file_failed_transiently_is_retried(
    site, pool, make_settings, direct
):
    o = site.origin
    site.add("/robots.txt", f"Sitemap: {o}/a.xml\n")
    site.add("/a.xml", status=503)
    site.add("/sitemap.xml", status=502)
    done = await scan(pool, make_settings, direct, o, fetch_max_attempts=1)
    job = done.job
    assert job["status"] == "pending" and job["attempts"] == 1, job["error"]
    assert job["error"].startswith("no sitemap could be fetched") and "HTTP 50" in job["error"]
    assert {done.files["/a.xml"]["error"], done.files["/sitemap.xml"]["error"]} == {
        "HTTP 503",
        "HTTP 502",
    }


async def test_a_site_answering_404_everywhere_fails_for_good(site, pool, make_settings, direct):
    o = site.origin
    site.add("/robots.txt", f"Sitemap: {o}/a.xml\n")
    done = await scan(pool, make_settings, direct, o)
    job = done.job
    assert job["status"] == "failed" and job["attempts"] == 1
    assert job["error"].startswith("no sitemap could be fetched") and "HTTP 404" in job["error"]
    await assert_agrees_with_rows(direct, done)


# A value the database cannot take fails neither the scan nor the file ----------------------


@pytest.mark.parametrize("path", ["copy", "insert"])
async def test_a_date_with_no_utc_equivalent_is_dropped_and_its_text_kept(
    site, pool, make_settings, direct, path
):
    """0001-01-01T00:00:00+14:00 is a valid W3C date whose UTC instant falls before year 1:
    the driver cannot encode it. Stored without its parsed date, raw text kept; by COPY (the
    first chunk) and by INSERT (a later chunk, after a URL listed twice switched the writer)."""
    o = site.origin
    early = "0001-01-01T00:00:00+14:00"
    # Over two chunks before the bad date, one URL twice early on: the writer has left COPY.
    first = [f"{o}/p0000"] + [f"{o}/p{i:04}" for i in range(2 * CHUNK)] if path == "insert" else []
    body = "".join(f"<url><loc>{u}</loc></url>" for u in first)
    body += f"<url><loc>{o}/bad</loc><lastmod>{early}</lastmod></url>"
    body += f"<url><loc>{o}/good</loc><lastmod>2024-01-02</lastmod></url>"
    site.add("/sitemap.xml", f"<urlset {NS}>{body}</urlset>")
    done = await scan(pool, make_settings, direct, o)
    assert done.job["status"] == "completed", done.job["error"]
    row = done.files["/sitemap.xml"]
    assert (row["status"], row["error"]) == ("ok", None)
    rows = {
        r["loc"]: r
        for r in await direct.fetch(
            "SELECT loc, lastmod, lastmod_raw FROM sitemap_urls WHERE loc IN ($1, $2)",
            f"{o}/bad",
            f"{o}/good",
        )
    }
    assert (rows[f"{o}/bad"]["lastmod"], rows[f"{o}/bad"]["lastmod_raw"]) == (None, early)
    assert rows[f"{o}/good"]["lastmod"] is not None
    assert len(done.locs) == len(set(first)) + 2
    await assert_agrees_with_rows(direct, done)


async def test_an_index_pointing_at_a_dead_host_asks_it_only_until_it_is_known_dead(
    site, pool, make_settings, direct
):
    o, dead = site.origin, f"http://127.0.0.1:{free_port()}"
    children = "".join(f"<sitemap><loc>{dead}/c{i}.xml</loc></sitemap>" for i in range(20))
    site.add("/robots.txt", f"Sitemap: {o}/index.xml\n")
    site.add(
        "/index.xml",
        f"<sitemapindex {NS}><sitemap><loc>{o}/a.xml</loc></sitemap>{children}</sitemapindex>",
    )
    site.add("/a.xml", urlset(f"{o}/p"))
    done = await scan(pool, make_settings, direct, o, fetch_max_attempts=1)
    assert done.job["status"] == "completed", done.job["error"]
    rows = [r for url, r in done.files.items() if url.startswith(dead)]
    assert len(rows) == 20 and all(r["status"] == "error" for r in rows)
    skipped = [
        r
        for r in rows
        if r["error"].startswith(f"not fetched: {dead} could not be reached (cannot connect")
    ]
    assert len(skipped) >= 20 - 4  # only the files already in flight asked it
    site_fetches = 1 + 1 + 1 + 16  # robots.txt, index, a.xml, the well-known paths
    assert done.fetches <= site_fetches + 4
    assert done.result["error_count"] == 20 and done.locs == [f"{o}/p"]
    await assert_agrees_with_rows(direct, done)


async def test_batch_totals_count_the_urls_of_a_flawed_only_sitemap(
    site, pool, make_settings, direct
):
    """The batch's sums come from its children's results: a child that stored URLs must
    complete and count them, or the batch leaves them out."""
    o = site.origin
    site.add("/sitemap.xml", urlset(*(f"{o}/page-{i:04}" for i in range(200))))
    batch = await direct.fetchval(
        "INSERT INTO jobs (job_type, payload) VALUES ('sitemap_batch', $1::jsonb) RETURNING id",
        json.dumps({"domains": [o]}),
    )
    worker = JobLoop(
        pool,
        make_settings(allow_private_networks=True, fetch_max_bytes=4096),
        default_registry(),
        concurrency=1,
        burst=True,
    )
    await asyncio.wait_for(worker.run(), 60)
    parent = await direct.fetchrow("SELECT * FROM jobs WHERE id = $1", batch)
    stored = await direct.fetchval(
        "SELECT count(*) FROM sitemap_urls u JOIN jobs j ON j.id = u.job_id WHERE j.parent_id = $1",
        batch,
    )
    assert parent["status"] == "completed" and 0 < stored < 200
    result = json.loads(parent["result"])
    assert (result["completed"], result["failed"]) == (1, 0)
    assert (result["url_count"], result["error_count"]) == (stored, 1)
