"""Hostile sites against the real scan job: each ends as an error row or a clean result,
never a crashed worker, a hung job or leaked content."""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import zlib

import pytest

from tests.support.sites import Site
from worker.database_urls import Urls
from worker.engine import JobLoop
from worker.jobs import default_registry

NS = 'xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"'


@pytest.fixture
def urls(direct_dsn: str) -> Urls:
    """Direct only: these tests are about HTTP input, not the pooler."""
    return Urls(direct_dsn, direct_dsn)


def urlset(*locs: str) -> bytes:
    return f"<urlset {NS}>{''.join(f'<url><loc>{u}</loc></url>' for u in locs)}</urlset>".encode()


async def scan(pool, make_settings, direct, site: Site, **settings):
    job_id = await direct.fetchval(
        "INSERT INTO jobs (job_type, payload) VALUES ('sitemap_scan', $1::jsonb) RETURNING id",
        json.dumps({"domain": site.origin}),
    )
    worker = JobLoop(
        pool,
        make_settings(allow_private_networks=True, **settings),
        default_registry(),
        concurrency=1,
        burst=True,
    )
    await asyncio.wait_for(worker.run(), 60)
    job = await direct.fetchrow("SELECT * FROM jobs WHERE id = $1", job_id)
    files = {
        r["url"].removeprefix(site.origin): r
        for r in await direct.fetch("SELECT * FROM sitemap_files WHERE job_id = $1", job_id)
    }
    return job, files


def with_good_sitemap(site: Site) -> None:
    """A healthy sitemap beside the hostile one: the job must complete with its URLs."""
    site.add("/sitemap_index.xml", urlset(f"{site.origin}/good"))


async def test_billion_laughs_is_refused(site, pool, make_settings, direct):
    lol = (
        '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
        + "".join(
            f'<!ENTITY lol{i} "{("&lol" + str(i - 1) + ";") * 10 if i else "&lol;" * 10}">'
            for i in range(10)
        )
        + f"]><urlset {NS}><url><loc>http://127.0.0.1/&lol9;</loc></url></urlset>"
    )
    site.add("/sitemap.xml", lol)
    with_good_sitemap(site)
    job, files = await scan(pool, make_settings, direct, site)
    assert job["status"] == "completed"
    assert (
        files["/sitemap.xml"]["status"] == "error" and "DOCTYPE" in files["/sitemap.xml"]["error"]
    )
    assert await direct.fetchval("SELECT count(*) FROM sitemap_urls WHERE loc LIKE '%lol%'") == 0


async def test_xxe_never_stores_local_file_content(site, pool, make_settings, direct, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-4242")
    site.add(
        "/sitemap.xml",
        f'<?xml version="1.0"?><!DOCTYPE u [<!ENTITY x SYSTEM "file://{secret}">]>'
        f"<urlset {NS}><url><loc>http://127.0.0.1/&x;</loc></url></urlset>",
    )
    with_good_sitemap(site)
    job, files = await scan(pool, make_settings, direct, site)
    assert files["/sitemap.xml"]["status"] == "error"
    dump = await direct.fetchval(
        "SELECT string_agg(t::text, ' ') FROM (SELECT * FROM sitemap_urls UNION ALL"
        " SELECT NULL, NULL, NULL, error, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL"
        " FROM sitemap_files) t"
    )
    assert "TOP-SECRET" not in dump and "TOP-SECRET" not in (job["result"] or "")


async def test_gzip_bomb_stops_with_an_error(site, pool, make_settings, direct):
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=9) as gz:
        zeros = bytes(1 << 20)
        for _ in range(1024):  # 1 GiB of zeros, about 1 MB compressed
            gz.write(zeros)
    site.add("/sitemap.xml.gz", out.getvalue())
    with_good_sitemap(site)
    job, files = await scan(pool, make_settings, direct, site)
    assert job["status"] == "completed"
    assert files["/sitemap.xml.gz"]["status"] == "error"
    assert files["/sitemap.xml.gz"]["bytes_uncompressed"] <= 51 * 1024 * 1024


async def test_endless_response_stops_at_the_download_cap(site, pool, make_settings, direct):
    site.stream("/sitemap.xml", f"<urlset {NS}>".encode() + b" " * 65536)
    with_good_sitemap(site)
    job, files = await scan(pool, make_settings, direct, site, fetch_max_bytes=2 * 1024 * 1024)
    assert job["status"] == "completed"
    row = files["/sitemap.xml"]
    assert row["status"] == "error" and "download cap" in row["error"]
    assert row["bytes"] <= 2 * 1024 * 1024 + 65536


async def test_slow_drip_server_hits_the_total_timeout(site, pool, make_settings, direct):
    site.stream("/sitemap.xml", b" ", interval=0.05)
    with_good_sitemap(site)
    job, files = await scan(pool, make_settings, direct, site, fetch_total_timeout=1.0)
    assert job["status"] == "completed"
    assert "timed out" in files["/sitemap.xml"]["error"]


async def test_redirect_loop_is_an_error_row(site, pool, make_settings, direct):
    site.redirect("/sitemap.xml", "/loop-a")
    site.redirect("/loop-a", "/loop-b")
    site.redirect("/loop-b", "/loop-a")
    with_good_sitemap(site)
    job, files = await scan(pool, make_settings, direct, site)
    assert job["status"] == "completed" and files["/sitemap.xml"]["error"] == "redirect loop"


async def test_html_served_as_a_sitemap(site, pool, make_settings, direct):
    site.add(
        "/sitemap.xml",
        b"<!DOCTYPE html><html><body><a href='/x'>x</a></body></html>",
        content_type="text/html",
    )
    with_good_sitemap(site)
    job, files = await scan(pool, make_settings, direct, site)
    assert files["/sitemap.xml"]["kind"] == "html" and files["/sitemap.xml"]["status"] == "error"
    assert json.loads(job["result"])["url_count"] == 1


async def test_index_of_many_missing_children(site, pool, make_settings, direct):
    o = site.origin
    children = "".join(f"<sitemap><loc>{o}/c{i}.xml</loc></sitemap>" for i in range(300))
    site.add("/sitemap.xml", f"<sitemapindex {NS}>{children}</sitemapindex>")
    job, files = await scan(pool, make_settings, direct, site)
    result = json.loads(job["result"])
    assert job["status"] == "completed"
    assert result["error_count"] == 300 and result["sitemap_count"] == 301
    assert sum(r["error"] == "HTTP 404" for r in files.values() if r["source"] == "index") == 300


async def test_sitemap_over_the_spec_limit_is_kept_whole_and_flagged(
    site, pool, make_settings, direct
):
    o = site.origin
    site.add("/sitemap.xml", urlset(*[f"{o}/page-{i}" for i in range(50_010)]))
    job, files = await scan(pool, make_settings, direct, site)
    row = files["/sitemap.xml"]
    assert job["status"] == "completed"
    assert row["status"] == "ok" and row["url_count"] == 50_010 and not row["truncated"]
    assert row["error"] == "50,010 URLs: over the sitemaps.org limit of 50,000 (all kept)"
    assert await direct.fetchval("SELECT count(*) FROM sitemap_urls") == 50_010


def test_gzip_bomb_fixture_is_small():
    data = zlib.compress(bytes(1 << 20), 9)
    assert len(data) < 2048  # a sanity check of the bomb's premise: zeros compress ~1000:1
