"""What a sitemap yields, and the lenient value parsers that fill it.

Entries keep the raw strings next to the parsed values: real sitemaps carry
garbage dates, out-of-range priorities and relative locs, and the store must be
able to show what the file actually said (sitemaps.md §5.2 items 21, 26, 27).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Literal, TypeVar
from urllib.parse import urljoin

# What a fetched sitemap file turned out to be (sitemap_files.kind); not a job outcome's kind.
SitemapKind = Literal["urlset", "index", "text", "rss", "atom", "html", "unknown"]

HTTP_PREFIXES = ("https://", "http://")
# sitemaps.org asks for < 2,048 characters; real files go beyond, so only
# absurd values are dropped (they would bloat every row they touch).
MAX_URL_CHARS = 8192
CHANGEFREQS = frozenset(("always", "hourly", "daily", "weekly", "monthly", "yearly", "never"))


@dataclass(slots=True)
class SitemapUrl:
    """One page URL: a urlset ``<url>``, a text line, an RSS item or an Atom entry.

    Extension collections are tuples: entries are values, and the shared empty
    tuple keeps the common no-extension case allocation-free.
    """

    loc: str
    lastmod: str | None = None  # raw (stripped) text, kept even when unparseable
    lastmod_at: datetime | None = None  # parsed, always timezone-aware (UTC if none given)
    changefreq: str | None = None  # lower-cased; None unless one of the 7 spec values
    priority: float | None = None  # None unless within 0.0..1.0
    images: tuple[dict[str, str | None], ...] = ()
    videos: tuple[dict[str, Any], ...] = ()
    news: dict[str, str | None] | None = None
    alternates: tuple[dict[str, str | None], ...] = ()  # {"hreflang", "href"}
    raw_loc: str | None = None  # the original value when loc was resolved from a relative one


@dataclass(slots=True)
class ChildSitemap:
    """One ``<sitemap>`` of a sitemap index."""

    loc: str
    lastmod: str | None = None
    lastmod_at: datetime | None = None
    raw_loc: str | None = None


Entry = SitemapUrl | ChildSitemap

_YEAR_MONTH = re.compile(r"(\d{4})(?:-(\d{2}))?")


def parse_datetime(raw: str) -> datetime | None:
    """W3C/ISO 8601 first (sitemaps), RFC 822 second (RSS); None for anything else."""
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        match = _YEAR_MONTH.fullmatch(raw)  # W3C allows "YYYY" and "YYYY-MM"
        if match:
            try:
                value = datetime(int(match[1]), int(match[2] or 1), 1)
            except ValueError:
                return None
        elif raw[:1].isalpha() or "," in raw:
            try:
                value = parsedate_to_datetime(raw)
            except (TypeError, ValueError, IndexError):
                return None
        else:
            return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value


def lastmod_pair(text: str) -> tuple[str | None, datetime | None]:
    """Raw element text -> (stripped raw value, parsed value)."""
    raw = text.strip()
    if not raw:
        return None, None
    return raw, parse_datetime(raw)


def parse_priority(text: str) -> float | None:
    """Accept "1", "1.00", "0,8" (comma decimals are common); reject out of range."""
    try:
        value = float(text.strip().replace(",", "."))
    except ValueError:
        return None
    return value if 0.0 <= value <= 1.0 else None  # NaN fails both comparisons


def parse_changefreq(text: str) -> str | None:
    value = text.strip().lower()
    return value if value in CHANGEFREQS else None


def resolve_loc(text: str, base_url: str) -> tuple[str, str | None] | None:
    """Strip, resolve a relative value against base_url, keep http(s) only.

    Returns (loc, raw) where raw is set only when the value was relative, or
    None when the value is unusable. Never rewrites the URL otherwise: query
    strings, case and encoding stay exactly as published.
    """
    loc = text.strip()
    if not loc or len(loc) > MAX_URL_CHARS or "\x00" in loc:
        return None  # empty, absurd, or holding a NUL (no PostgreSQL text can store it)
    if loc[:8].lower().startswith(HTTP_PREFIXES):
        return loc, None
    joined = urljoin(base_url, loc)
    if not joined.startswith(HTTP_PREFIXES) or len(joined) > MAX_URL_CHARS:
        return None  # javascript:, mailto:, ftp:, or a base that is not http(s)
    return joined, loc


def extension_url(text: str | None, base_url: str) -> str | None:
    """Image/video/hreflang URLs: resolved when relative, otherwise kept as given."""
    if text is None:
        return None
    value = text.strip()
    if not value:
        return None
    resolved = resolve_loc(value, base_url)
    return resolved[0] if resolved else value


K = TypeVar("K")
V = TypeVar("V")


class Memo(dict[K, V]):
    """A bounded memo for values that repeat within a file (dates of an index or
    feed, tag local names); cleared when full so hostile input stays bounded."""

    __slots__ = ("_fn",)

    def __init__(self, fn: Callable[[K], V]) -> None:
        super().__init__()
        self._fn = fn

    def __missing__(self, key: K) -> V:
        if len(self) >= 4096:
            self.clear()
        value = self[key] = self._fn(key)
        return value
