"""Sitemap discovery inputs: ``Sitemap:`` lines of robots.txt and well-known paths.

robots.txt is hand-written and served every which way (sitemaps.md §5.2
item 33): ``Site-map:`` spelling, relative or scheme-less values, trailing
comments, BOMs, CR line ends, gzip bodies, stray bytes. Each of those has cost
another tool its sitemaps, so this parser accepts them all.
"""

from __future__ import annotations

import re
import zlib
from typing import NamedTuple
from urllib.parse import urljoin, urlsplit

# Probed on every site, robots.txt or not (browsertrix-crawler#933): USP 1.8.1's
# list (sitemaps.md §1a) plus WordPress core's /wp-sitemap.xml, commonest first.
WELL_KNOWN_PATHS: tuple[str, ...] = (
    "/sitemap.xml",
    "/sitemap_index.xml",
    "/sitemap.txt",
    "/sitemap-index.xml",
    "/wp-sitemap.xml",
    "/sitemap.xml.gz",
    "/sitemap_index.xml.gz",
    "/sitemap-index.xml.gz",
    "/sitemap_news.xml",
    "/sitemap-news.xml",
    "/sitemap_news.xml.gz",
    "/sitemap-news.xml.gz",
    "/sitemap/sitemap-index.xml",
    "/.sitemap.xml",
    "/sitemap",
    "/admin/config/search/xmlsitemap",
)

# Google reads the first 500 KiB of a robots.txt; anything past that is ignored
# here too (and bounds a gzip bomb served as robots.txt).
MAX_ROBOTS_BYTES = 512 * 1024

_SITEMAP_LINE = re.compile(r"^\s*site-?map\s*:\s*(\S+)", re.IGNORECASE)
# "example.com/sitemap.xml": a dotted first segment followed by a path.
_BARE_HOST = re.compile(r"^[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+(?::\d+)?/")


class Robots(NamedTuple):
    sitemaps: list[str]
    cut: bool  # only the start of the file was read (the cap, or a body cut short)


def sitemaps_from_robots(body: bytes, base_url: str, *, cut: bool = False) -> list[str]:
    """Sitemap URLs listed in a robots.txt body, resolved, deduplicated in order.

    base_url is the URL the robots.txt was fetched from (after redirects); `cut` says the
    body is only the start of the file (see read_robots).
    """
    return read_robots(body, base_url, cut=cut).sitemaps


def read_robots(body: bytes, base_url: str, *, cut: bool = False) -> Robots:
    """The Sitemap: lines of the first MAX_ROBOTS_BYTES of a robots.txt, complete lines
    only once the text is cut (by that cap, or because `cut` says the body is only the
    start of the file): a line broken off by the cut could name the wrong URL."""
    text, cut = _decode(body, cut)
    if cut:
        text = text[: max(text.rfind("\n"), text.rfind("\r")) + 1]
    found: dict[str, None] = {}
    for line in text.splitlines():
        match = _SITEMAP_LINE.match(line.split("#", 1)[0])
        if match:
            url = _resolve(match[1], base_url)
            if url is not None:
                found.setdefault(url)
    return Robots(list(found), cut)


def _decode(body: bytes, cut: bool) -> tuple[str, bool]:
    if body[:2] == b"\x1f\x8b":
        inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            body = inflate.decompress(body, MAX_ROBOTS_BYTES)
        except zlib.error:
            return "", cut
        cut = cut or bool(inflate.unconsumed_tail) or not inflate.eof
    cut = cut or len(body) > MAX_ROBOTS_BYTES
    return body[:MAX_ROBOTS_BYTES].decode("utf-8-sig", "replace"), cut


def _resolve(value: str, base_url: str) -> str | None:
    """Absolute http(s) as is; relative and scheme-less values against base_url. None for
    anything else, and for a value holding a NUL (no PostgreSQL text can store it)."""
    if "\x00" in value:
        return None
    if value[:8].lower().startswith(("https://", "http://")):
        return value
    if _BARE_HOST.match(value):  # scheme-less host (squirrelscan#393)
        value = "//" + value
    url = urljoin(base_url, value)
    if not url.startswith(("https://", "http://")) or not urlsplit(url).netloc:
        return None
    return url
