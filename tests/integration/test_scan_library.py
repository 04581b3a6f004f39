"""worker.scan used as a library: a real site on 127.0.0.1, no database, no worker."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator

import pytest

from tests.support.sites import Site
from worker.scan import scan_sitemaps
from worker.scan.fetch import Fetcher, FetchLimits

NS = 'xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"'


def urlset(*locs: str) -> bytes:
    body = "".join(f"<url><loc>{loc}</loc></url>" for loc in locs)
    return f'<?xml version="1.0"?><urlset {NS}>{body}</urlset>'.encode()


def index(*locs: str) -> bytes:
    body = "".join(f"<sitemap><loc>{loc}</loc></sitemap>" for loc in locs)
    return f'<?xml version="1.0"?><sitemapindex {NS}>{body}</sitemapindex>'.encode()


@pytest.fixture
async def site() -> AsyncIterator[Site]:
    async with Site() as s:
        yield s


async def test_scan_sitemaps_walks_a_site_file_by_file(site: Site) -> None:
    o = site.origin
    site.add("/robots.txt", f"Sitemap: {o}/index.xml\n")
    site.add("/index.xml", index(f"{o}/a.xml", f"{o}/b.xml.gz", f"{o}/a.xml", f"{o}/index.xml"))
    site.add("/a.xml", urlset(f"{o}/p1", f"{o}/p2"))
    site.add("/b.xml.gz", gzip.compress(urlset(f"{o}/p3")))
    async with Fetcher(FetchLimits(allow_private_networks=True)) as fetcher:
        files = [f async for f in scan_sitemaps(o, fetcher)]
    found = {f.url.removeprefix(o): f for f in files if f.found}
    assert set(found) == {"/index.xml", "/a.xml", "/b.xml.gz"}
    assert (found["/index.xml"].kind, found["/index.xml"].source, found["/index.xml"].urls) == (
        "index",
        "robots",
        [],
    )
    assert [u.loc for u in found["/a.xml"].urls] == [f"{o}/p1", f"{o}/p2"]
    assert [u.loc for u in found["/b.xml.gz"].urls] == [f"{o}/p3"]
    assert (found["/b.xml.gz"].source, found["/b.xml.gz"].depth, found["/b.xml.gz"].error) == (
        "index",
        1,
        None,
    )
    assert site.hits["/a.xml"] == 1 and site.hits["/index.xml"] == 1  # each file once
    missing = [f for f in files if not f.found]
    assert missing and all(f.fetched.status == 404 and f.error == "HTTP 404" for f in missing)


async def test_max_urls_stops_the_walk(site: Site) -> None:
    o = site.origin
    site.add("/robots.txt", f"Sitemap: {o}/a.xml\nSitemap: {o}/b.xml\n")
    site.add("/a.xml", urlset(*(f"{o}/a{i}" for i in range(5))))
    site.add("/b.xml", urlset(f"{o}/b0"))
    async with Fetcher(FetchLimits(allow_private_networks=True)) as fetcher:
        files = [f async for f in scan_sitemaps(o, fetcher, max_urls=3)]
    assert [len(f.urls) for f in files] == [3]
    assert site.hits["/b.xml"] == 0


async def test_the_guard_holds_by_default(site: Site) -> None:
    """Without a fetcher of its own, the library's default limits refuse loopback."""
    site.add("/robots.txt", f"Sitemap: {site.origin}/a.xml\n")
    assert [f async for f in scan_sitemaps(site.origin)] == []
    assert site.hits["/robots.txt"] == 0
