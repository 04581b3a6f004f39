"""sitemap_scan end to end: a real site on 127.0.0.1, the real worker, a real PostgreSQL."""

from __future__ import annotations

import asyncio
import gzip
import json
import re

import pytest

from worker.engine import JobLoop
from worker.jobs import default_registry
from worker.jobs.sitemap.store import CHUNK
from worker.waiting import wait_for_jobs

NS = 'xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"'
IMG = 'xmlns:image="http://www.google.com/schemas/sitemap-image/1.1"'
XHTML = 'xmlns:xhtml="http://www.w3.org/1999/xhtml"'


def urlset(*locs: str, extra: str = "") -> bytes:
    body = "".join(f"<url><loc>{loc}</loc>{extra}</url>" for loc in locs)
    return f'<?xml version="1.0"?><urlset {NS} {IMG} {XHTML}>{body}</urlset>'.encode()


def index(*locs: str) -> bytes:
    body = "".join(f"<sitemap><loc>{loc}</loc></sitemap>" for loc in locs)
    return f'<?xml version="1.0"?><sitemapindex {NS}>{body}</sitemapindex>'.encode()


async def scan(pool, settings, direct, domain: str, **payload):
    job_id = await direct.fetchval(
        "INSERT INTO jobs (job_type, payload) VALUES ('sitemap_scan', $1::jsonb) RETURNING id",
        json.dumps({"domain": domain, **payload}),
    )
    worker = JobLoop(pool, settings, default_registry(), concurrency=2, burst=True)
    await asyncio.wait_for(worker.run(), 60)
    return await direct.fetchrow("SELECT * FROM jobs WHERE id = $1", job_id)


async def test_scan_walks_robots_index_gzip_and_stores_each_url_once(
    site, pool, make_settings, direct
):
    o = site.origin
    site.add("/robots.txt", f"User-agent: *\nSitemap: {o}/sitemap_index.xml # main\n".encode())
    site.add(
        "/sitemap_index.xml",
        index(
            f"{o}/a.xml",
            f"{o}/b.xml.gz",
            f"{o}/missing.xml",
            f"{o}/a.xml",
            f"{o}/sitemap_index.xml",
        ),
    )
    extra = (
        f"<image:image><image:loc>{o}/i1.jpg</image:loc></image:image>"
        f"<image:image><image:loc>{o}/i2.jpg</image:loc></image:image>"
        f'<xhtml:link rel="alternate" hreflang="de" href="{o}/de/"/>'
        f'<xhtml:link rel="alternate" hreflang="x-default" href="{o}/"/>'
    )
    site.add("/a.xml", urlset(f"{o}/p1?x=1&amp;y=2", f"{o}/p2", f"{o}/p3", extra=extra))
    site.add("/b.xml.gz", gzip.compress(urlset(f"{o}/p3", f"{o}/p4")))
    site.add("/sitemap.xml", urlset(f"{o}/p5"))
    job = await scan(pool, make_settings(allow_private_networks=True), direct, o)
    assert job["status"] == "completed", job["error"]
    result = json.loads(job["result"])
    assert result["url_count"] == 5 and result["error_count"] == 1
    assert result["sitemap_count"] == 5  # index, a, b, missing, sitemap.xml; not the absent probes
    assert result["kinds"] == {"index": 1, "urlset": 3}
    assert job["progress"] == 1
    urls = {r["loc"]: r for r in await direct.fetch("SELECT * FROM sitemap_urls")}
    assert set(urls) == {f"{o}/p1?x=1&y=2", f"{o}/p2", f"{o}/p3", f"{o}/p4", f"{o}/p5"}
    assert [i["loc"] for i in json.loads(urls[f"{o}/p2"]["images"])] == [
        f"{o}/i1.jpg",
        f"{o}/i2.jpg",
    ]
    assert {a["hreflang"] for a in json.loads(urls[f"{o}/p2"]["alternates"])} == {"de", "x-default"}
    assert urls[f"{o}/p4"]["images"] is None
    files = {r["url"]: r for r in await direct.fetch("SELECT * FROM sitemap_files")}
    assert (
        site.hits["/a.xml"] == 1 and site.hits["/sitemap_index.xml"] == 1
    )  # listed twice, fetched once
    assert files[f"{o}/missing.xml"]["status"] == "error"
    assert files[f"{o}/missing.xml"]["error"] == "HTTP 404"
    assert files[f"{o}/a.xml"]["parent_id"] == files[f"{o}/sitemap_index.xml"]["id"]
    assert files[f"{o}/a.xml"]["url_count"] == 3 and files[f"{o}/b.xml.gz"]["url_count"] == 2
    assert files[f"{o}/sitemap_index.xml"]["source"] == "robots"
    assert files[f"{o}/sitemap.xml"]["source"] == "well_known"


async def test_max_urls_caps_what_is_stored(site, pool, make_settings, direct):
    o = site.origin
    site.add("/sitemap.xml", urlset(*[f"{o}/p{i}" for i in range(50)]))
    job = await scan(pool, make_settings(allow_private_networks=True), direct, o, max_urls=10)
    result = json.loads(job["result"])
    assert job["status"] == "completed" and result["url_count"] == 10 and result["truncated"]
    assert await direct.fetchval("SELECT count(*) FROM sitemap_urls") == 10


async def test_max_urls_holds_when_files_store_side_by_side(site, pool, make_settings, direct):
    """Four files end at about the same time, each with 30 URLs, under max_urls=50: each file
    reserves its share before writing, so together they cannot pass the cap."""
    o = site.origin
    site.add("/robots.txt", f"Sitemap: {o}/index.xml\n")
    site.add("/index.xml", index(*(f"{o}/{n}.xml" for n in "abcd")))
    release = asyncio.Event()
    for n in "abcd":
        body = urlset(*(f"{o}/{n}/{i}" for i in range(30)))
        site.add_split(f"/{n}.xml", body, at=len(body) - len(b"</urlset>"), release=release)
    job = asyncio.ensure_future(
        scan(pool, make_settings(allow_private_networks=True), direct, o, max_urls=50)
    )
    async with asyncio.timeout(20):
        for n in "abcd":
            await site.arrival(f"/{n}.xml").wait()
    release.set()  # all four files end together
    row = await job
    assert row["status"] == "completed", row["error"]
    assert json.loads(row["result"])["url_count"] == 50
    assert (
        await direct.fetchval("SELECT count(*) FROM sitemap_urls WHERE job_id = $1", row["id"])
        == 50
    )


async def test_a_held_child_does_not_hold_up_the_files_after_it(site, pool, make_settings, direct):
    """Files go FILES_AT_ONCE at a time, and a slot frees as soon as its file ends: with the
    second child held, the last one (beyond the first four) is still fetched and stored."""
    o = site.origin
    names = "abcdef"
    site.add("/robots.txt", f"Sitemap: {o}/index.xml\n")
    site.add("/index.xml", index(*(f"{o}/{n}.xml" for n in names)))
    for n in names:
        site.add(f"/{n}.xml", urlset(f"{o}/{n}/page"))
    release = site.hold("/b.xml")
    job = asyncio.ensure_future(scan(pool, make_settings(allow_private_networks=True), direct, o))
    async with asyncio.timeout(20):
        await site.arrival("/f.xml").wait()  # with fixed batches of four it never came
    release.set()
    row = await job
    assert row["status"] == "completed", row["error"]
    assert json.loads(row["result"])["url_count"] == len(names)
    assert site.hits["/b.xml"] == 1


async def test_ssrf_guard_refuses_loopback_by_default(site, pool, make_settings, direct):
    site.add("/sitemap.xml", urlset(f"{site.origin}/p"))
    job = await scan(pool, make_settings(allow_private_networks=False), direct, site.origin)
    assert job["status"] == "failed"
    assert "loopback" in job["error"] and job["error"].startswith("no sitemap could be fetched")
    assert site.hits.get("/sitemap.xml", 0) == 0 and site.hits.get("/robots.txt", 0) == 0


@pytest.mark.parametrize("domain", ["", "ftp://example.com", "user:pw@example.com", "exa mple.com"])
async def test_invalid_domain_fails_with_a_clear_error(pool, settings, direct, domain):
    job = await scan(pool, settings, direct, domain)
    assert job["status"] == "failed" and job["attempts"] == 1
    assert job["error"].startswith("invalid payload for sitemap_scan: domain")


class Lines:
    """A non-TTY output that signals once a line shows a running scan with `at_least` URLs."""

    def __init__(self, at_least: int) -> None:
        self.lines: list[str] = []
        self.at_least = at_least
        self.seen = asyncio.Event()

    def write(self, text: str) -> None:
        for line in text.splitlines():
            self.lines.append(line)
            found = re.search(r"processing \d+% · \d+/\d+ files · ([\d,]+) URLs listed", line)
            if found and int(found[1].replace(",", "")) >= self.at_least:
                self.seen.set()

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


async def test_waiting_shows_files_and_urls_while_a_scan_runs(
    site, pool, make_settings, direct, urls
):
    """enqueue --wait and scan show a live line: files done / tried and URLs so far, which
    grow while a big file is still being read (its chunks count on its file row)."""
    o = site.origin
    site.add("/robots.txt", f"Sitemap: {o}/index.xml\n")
    site.add("/index.xml", index(f"{o}/a.xml", f"{o}/big.xml"))
    site.add("/a.xml", urlset(*(f"{o}/a/{i}" for i in range(3))))
    big = urlset(*(f"{o}/big/{i}" for i in range(CHUNK + 10)))
    release = site.add_split(
        "/big.xml", big, at=len(big) - len(b"</urlset>")
    )  # held before its end
    settings = make_settings(allow_private_networks=True)
    job_id = await direct.fetchval(
        "INSERT INTO jobs (job_type, payload) VALUES ('sitemap_scan', $1::jsonb) RETURNING id",
        json.dumps({"domain": o}),
    )
    worker = asyncio.ensure_future(JobLoop(pool, settings, default_registry(), burst=True).run())
    out = Lines(at_least=CHUNK)
    waiting = asyncio.ensure_future(
        wait_for_jobs(urls.direct, settings, [job_id], out=out, refresh=0.05)
    )
    async with asyncio.timeout(20):
        await out.seen.wait()  # big.xml's first chunk is counted while its end is held
    release.set()
    [row] = await asyncio.wait_for(waiting, 20)
    await asyncio.wait_for(worker, 20)
    assert row["status"] == "completed", row["error"]
    files = await direct.fetchval("SELECT count(*) FROM sitemap_files WHERE job_id = $1", job_id)
    assert (
        out.lines[-1]
        == f"job {job_id} completed 100% · {files}/{files} files · {CHUNK + 13:,} URLs listed"
    )
