"""Sitemap scanning: discovery (robots.txt, well-known paths) and I/O-free parsing."""

from worker.scan.model import ChildSitemap, Entry, SitemapKind, SitemapUrl
from worker.scan.parse import SitemapParser
from worker.scan.robots import WELL_KNOWN_PATHS, sitemaps_from_robots

__all__ = [
    "WELL_KNOWN_PATHS",
    "ChildSitemap",
    "Entry",
    "SitemapKind",
    "SitemapParser",
    "SitemapUrl",
    "sitemaps_from_robots",
]
