"""The scanner on its own, with no database: every sitemap of a site, file by file.

    async for file in scan_sitemaps("example.com"):
        print(file.url, file.kind, len(file.urls), file.error)

Sequential and in memory (one file's entries at a time): the library use, as
ultimate-sitemap-parser offers it. The worker's sitemap_scan job walks files side by side
and streams their URLs to the database instead (worker/jobs/sitemap/crawl.py).
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from worker.scan.discover import discover
from worker.scan.fetch import Fetcher, FetchResult
from worker.scan.model import ChildSitemap, SitemapKind, SitemapUrl
from worker.scan.parse import SitemapParser
from worker.scan.target import parse_target


@dataclass(slots=True)
class SitemapFile:
    """One fetched sitemap: what HTTP said, what the parser made of it."""

    url: str
    source: str  # "robots", "well_known" or "index"
    depth: int
    fetched: FetchResult
    kind: SitemapKind | None  # None unless the server answered 200
    urls: list[SitemapUrl] = field(default_factory=list)
    children: list[ChildSitemap] = field(default_factory=list)
    error: str | None = None  # the fetch's error, else the parser's

    @property
    def found(self) -> bool:
        """False for a well-known path the site simply does not have (404, 410)."""
        return not (self.source == "well_known" and self.fetched.status in (404, 410))


async def scan_sitemaps(
    domain: str,
    fetcher: Fetcher | None = None,
    *,
    max_files: int = 1000,
    max_depth: int = 10,
    max_urls: int = 1_000_000,
) -> AsyncIterator[SitemapFile]:
    """robots.txt and the well-known paths, then every index breadth-first, each file once.
    `domain` is a bare name or a URL; a site that cannot be reached at all yields nothing
    (discover() says why). Without a `fetcher`, one with the default limits is used and closed."""
    target = parse_target(domain)
    own = fetcher is None
    fetcher = fetcher or Fetcher()
    try:
        found = await discover(fetcher, target)
        queue = deque((url, source, 0) for url, source in found.seeds)
        seen: set[str] = set()
        files = urls = 0
        while queue and files < max_files and urls < max_urls:
            url, source, depth = queue.popleft()
            if url in seen:
                continue
            seen.add(url)
            file = await _read(fetcher, url, source, depth, max_urls - urls)
            seen.add(file.fetched.final_url)
            files, urls = files + 1, urls + len(file.urls)
            yield file
            if depth < max_depth:
                queue.extend(
                    (c.loc, "index", depth + 1) for c in file.children if c.loc not in seen
                )
    finally:
        if own:
            await fetcher.close()


async def _read(fetcher: Fetcher, url: str, source: str, depth: int, max_urls: int) -> SitemapFile:
    parser = SitemapParser(url, max_urls=max_urls)
    entries: list[SitemapUrl | ChildSitemap] = []

    def sink(chunk: bytes) -> bool:
        for batch in parser.feed_batches(chunk):
            entries.extend(batch)
        return not parser.truncated

    fetched = await fetcher.fetch(url, sink)
    cut = fetched.truncated or fetched.stopped
    if fetched.ok or cut:
        entries.extend(parser.close(cut=cut))
    file = SitemapFile(
        url,
        source,
        depth,
        fetched,
        parser.kind if fetched.status == 200 else None,
        error=fetched.error or parser.error,
    )
    for entry in entries:
        if isinstance(entry, ChildSitemap):
            file.children.append(entry)
        else:
            file.urls.append(entry)
    return file
