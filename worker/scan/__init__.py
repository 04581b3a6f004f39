"""Sitemap scanning as a library: discovery (robots.txt, well-known paths), fetching and
I/O-free parsing. No database, no job context, no worker settings: the sitemap_scan job
(worker/jobs/sitemap/) adds storage and orchestration.

    async for file in worker.scan.scan_sitemaps("example.com"):
        ...
"""

from __future__ import annotations

import importlib
from typing import Any

from worker.scan.model import ChildSitemap, Entry, SitemapKind, SitemapUrl
from worker.scan.parse import SitemapParser
from worker.scan.robots import WELL_KNOWN_PATHS, sitemaps_from_robots

# The network half loads aiohttp: imported when first asked for, so a parse-only use stays light.
_LAZY = {
    "Fetcher": "worker.scan.fetch",
    "FetchLimits": "worker.scan.fetch",
    "FetchResult": "worker.scan.fetch",
    "discover": "worker.scan.discover",
    "scan_sitemaps": "worker.scan.walk",
    "SitemapFile": "worker.scan.walk",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'worker.scan' has no attribute {name!r}")


__all__ = [
    "WELL_KNOWN_PATHS",
    "ChildSitemap",
    "Entry",
    "FetchLimits",
    "FetchResult",
    "Fetcher",
    "SitemapFile",
    "SitemapKind",
    "SitemapParser",
    "SitemapUrl",
    "discover",
    "scan_sitemaps",
    "sitemaps_from_robots",
]
