"""Streaming XML layer: lxml pull parser in, entries out, memory flat.

The document kind is already known (the driver sniffed the root element), so
the pull parser filters entry elements at the C level (``{*}url`` matches any
namespace or none) and Python only sees finished entries. Entry children are
matched by local name through a per-document tag cache, so namespace variants
(sitemaps 0.9, Google 0.84, prefixed, ``xmlns=""``) cost one dict lookup.
Completed entries are deleted from the tree after every slice, never the
element libxml2 is still building.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from itertools import chain
from typing import Any

from lxml import etree

from worker.scan.model import (
    HTTP_PREFIXES,
    MAX_URL_CHARS,
    ChildSitemap,
    Entry,
    Kind,
    Memo,
    SitemapUrl,
    extension_url,
    lastmod_pair,
    parse_changefreq,
    parse_datetime,
    parse_priority,
    resolve_loc,
)

# Hostile-input settings (sitemaps.md §2): no entity expansion, no network, no
# DTD, libxml2's default size limits. Comments/PIs/blank text are not stored,
# which also keeps the tree small. The driver refuses DOCTYPEs before lxml
# sees them; these options are the second line of defence.
PARSER_OPTIONS: dict[str, Any] = {
    "resolve_entities": False,
    "no_network": True,
    "load_dtd": False,
    "huge_tree": False,
    "remove_comments": True,
    "remove_pis": True,
    "remove_blank_text": True,
    "collect_ids": False,
}
SLICE = 64 * 1024  # bytes per lxml feed: bounds the tree between two sweeps
DOCTYPE_ERROR = "DOCTYPE not allowed (DTD and entity declarations are refused)"

_ENTRY_TAG = {"urlset": "{*}url", "index": "{*}sitemap", "rss": "{*}item", "atom": "{*}entry"}

# Codes for the children of <url>/<sitemap>.
_SKIP, _LOC, _LASTMOD, _CHANGEFREQ, _PRIORITY, _IMAGE, _VIDEO, _NEWS, _LINK = range(9)
_CORE = {"loc": _LOC, "lastmod": _LASTMOD, "changefreq": _CHANGEFREQ, "priority": _PRIORITY}
_CONTAINERS = {"image": _IMAGE, "video": _VIDEO, "news": _NEWS}
# Extension namespaces vary in the wild (http/https, image/1.1 vs 1.0,
# sitemaps.org instead of google.com, news/0.84): match the word, not the URI.
_EXTENSION_WORD = re.compile(r"image|video|news|xhtml|w3\.org/1999", re.IGNORECASE)
_IMAGE_KEYS = ("loc", "caption", "title", "geo_location", "license")


def split_tag(tag: str) -> tuple[str, str]:
    """'{ns}local' -> (ns, local). An undeclared prefix ('image:image', which
    libxml2 reports but keeps) gives the prefix as the namespace hint."""
    if tag[:1] == "{":
        ns, _, local = tag[1:].partition("}")
        return ns, local
    prefix, _, local = tag.rpartition(":")
    return prefix, local


def _local(tag: str) -> str:
    return split_tag(tag)[1]


def _classify(tag: str, entry_tag: str) -> int:
    """Which field of an entry a child tag is, from its local name and namespace."""
    ns, local = split_tag(tag)
    entry_ns = split_tag(entry_tag)[0]
    word = _EXTENSION_WORD.search(ns)
    if local in _CORE and (ns == entry_ns or not word):
        return _CORE[local]  # never an <image:loc> standing directly under <url>
    if local in _CONTAINERS and (not word or word[0].lower() == local):
        return _CONTAINERS[local]  # no namespace at all (forgotten prefix) is accepted
    if local == "link" and (not ns or ns == entry_ns or (word and word[0].lower() in ("xhtml", "w3.org/1999"))):
        return _LINK
    return _SKIP


def _text(el: Any) -> str | None:
    text = el.text
    if text is None:
        return None
    return text.strip() or None


class XmlStream:
    """One XML document of a known kind, fed in byte chunks."""

    def __init__(self, kind: Kind, base_url: str, max_urls: int) -> None:
        self._parser = etree.XMLPullParser(events=("end",), tag=_ENTRY_TAG[kind], **PARSER_OPTIONS)
        self._handle = {
            "urlset": self._urls,
            "index": self._sitemaps,
            "rss": self._items,
            "atom": self._entries,
        }[kind]
        self._base = base_url
        self._limit = max_urls
        self._seen: set[str] = set()
        self._codes: dict[str, int] = {}
        self._locals: Memo[str, str] = Memo(_local)
        self._dates = Memo(lastmod_pair)
        # Plain dicts (exact-type subscripts are the fastest lookups), keyed
        # by the raw element text; bounded by _sweep_memos().
        self._freqs: dict[str, str | None] = {}
        self._prios: dict[str, float | None] = {}
        self._checked = False
        self._fed = 0
        self.count = 0
        self.skipped = 0  # entries without a usable loc
        self.duplicates = 0
        self.full = False  # max_urls reached and another entry followed
        self.error: str | None = None

    def feed(self, data: bytes) -> list[Entry]:
        out: list[Entry] = []
        for start in range(0, len(data), SLICE):
            piece = data[start : start + SLICE]
            try:
                self._parser.feed(piece)
            except etree.XMLSyntaxError as exc:
                self._fail(exc, len(piece))
            self._drain(out)
            self._fed += len(piece)
            if self.error or self.full:
                break
        return out

    def close(self) -> list[Entry]:
        out: list[Entry] = []
        root = None
        try:
            root = self._parser.close()
        except etree.XMLSyntaxError as exc:
            self._fail(exc, 0)
        self._drain(out)
        if root is not None and not self._checked and _has_dtd(root):
            self.error, out = DOCTYPE_ERROR, []
        return out

    def _fail(self, exc: etree.XMLSyntaxError, size: int) -> None:
        # Positions from libxml2 are sometimes wrong for undeclared entities
        # (and lxml's error_log is empty in push mode), so the byte range of
        # the slice being parsed is given as a reliable bracket.
        where = f"bytes {self._fed:,}-{self._fed + size:,}" if size else f"end of input, byte {self._fed:,}"
        self.error = f"malformed XML: {exc.msg} ({where})"

    def _drain(self, out: list[Entry]) -> None:
        events: Iterator[tuple[str, Any]] = self._parser.read_events()
        if not self._checked:
            first = next(events, None)
            if first is None:
                return
            if _has_dtd(first[1]):
                self.error = DOCTYPE_ERROR
                return
            self._checked = True
            events = chain((first,), events)
        last = self._handle(events, out)
        if len(self._prios) > 4096 or len(self._freqs) > 4096:
            self._prios.clear()  # garbage values must not grow without bound
            self._freqs.clear()
        if last is not None:
            parent = last.getparent()
            if parent is not None:
                del parent[:-1]  # finished entries (and stray siblings); the last may still be open

    def _accept(self, text: str | None) -> tuple[str, str | None] | None:
        """Resolve, dedupe and count one loc; None when it must not be emitted."""
        resolved = resolve_loc(text, self._base) if text else None
        if resolved is None:
            self.skipped += 1
            return None
        if resolved[0] in self._seen:
            self.duplicates += 1
            return None
        if self.count >= self._limit:
            self.full = True
            return None
        self._seen.add(resolved[0])
        self.count += 1
        return resolved

    def _urls(self, events: Iterator[tuple[str, Any]], out: list[Entry]) -> Any:
        """The hot loop: everything that runs once per <url> is inlined here."""
        codes, base, seen, limit = self._codes, self._base, self._seen, self._limit
        freqs, prios, fromiso = self._freqs, self._prios, datetime.fromisoformat
        count, skipped, dupes = self.count, self.skipped, self.duplicates
        el = None
        for _, el in events:
            loc = lastmod = changefreq = priority = extra = None
            for child in el:
                tag = child.tag
                try:
                    code = codes[tag]
                except KeyError:
                    code = codes[tag] = _classify(tag, el.tag)
                if code == _LOC:
                    loc = child.text
                elif code == _LASTMOD:
                    lastmod = child.text
                elif code == _CHANGEFREQ:
                    changefreq = child.text
                elif code == _PRIORITY:
                    priority = child.text
                elif code:
                    if extra is None:
                        extra = []
                    extra.append((code, child))
            if loc is None:
                skipped += 1
                continue
            loc = loc.strip()
            if loc.startswith(HTTP_PREFIXES) and len(loc) <= MAX_URL_CHARS:
                raw = None
            else:
                resolved = resolve_loc(loc, base)
                if resolved is None:
                    skipped += 1
                    continue
                loc, raw = resolved
            if loc in seen:
                dupes += 1
                continue
            if count >= limit:
                self.full = True
                break
            seen.add(loc)
            count += 1
            if lastmod is None:
                lastmod_at = None
            else:  # inlined: a memo does not help, most lastmod values are unique
                lastmod = lastmod.strip()
                try:
                    lastmod_at = fromiso(lastmod)
                    if lastmod_at.tzinfo is None:
                        lastmod_at = lastmod_at.replace(tzinfo=UTC)
                except ValueError:
                    lastmod_at = parse_datetime(lastmod) if lastmod else None
                    lastmod = lastmod or None
            if changefreq is not None:
                try:
                    changefreq = freqs[changefreq]
                except KeyError:
                    freqs[changefreq] = value = parse_changefreq(changefreq)
                    changefreq = value
            if priority is not None:
                try:
                    priority = prios[priority]
                except KeyError:
                    prios[priority] = value = parse_priority(priority)
                    priority = value
            if extra is None:
                if raw is None:
                    out.append(SitemapUrl(loc, lastmod, lastmod_at, changefreq, priority))
                else:
                    out.append(SitemapUrl(loc, lastmod, lastmod_at, changefreq, priority, raw_loc=raw))
            else:
                images, videos, news, alternates = self._extensions(extra)
                out.append(
                    SitemapUrl(
                        loc, lastmod, lastmod_at, changefreq, priority,
                        images, videos, news, alternates, raw,
                    )
                )  # fmt: skip
        self.count, self.skipped, self.duplicates = count, skipped, dupes
        return el

    def _extensions(self, extra: list[tuple[int, Any]]) -> tuple[Any, Any, Any, Any]:
        images: list[dict[str, str | None]] = []
        videos: list[dict[str, Any]] = []
        alternates: list[dict[str, str | None]] = []
        news = None
        for code, child in extra:
            if code == _LINK:
                alternate = self._alternate(child)
                if alternate is not None:
                    alternates.append(alternate)
            elif code == _IMAGE:
                image = self._image(child)
                if image is not None:
                    images.append(image)
            elif code == _VIDEO:
                videos.append(self._video(child))
            elif code == _NEWS and news is None:
                news = self._news(child) or None
        return tuple(images), tuple(videos), news, tuple(alternates)

    def _alternate(self, el: Any) -> dict[str, str | None] | None:
        """xhtml:link rel="alternate" hreflang=… href=… (x-default is just a hreflang)."""
        rel = el.get("rel")
        hreflang = el.get("hreflang")
        if rel is None and hreflang is None:
            return None
        if rel is not None and "alternate" not in rel.lower().split():
            return None
        href = extension_url(el.get("href"), self._base)
        if href is None:
            return None
        return {"hreflang": hreflang.strip() if hreflang else None, "href": href}

    def _image(self, el: Any) -> dict[str, str | None] | None:
        """All image fields, deprecated ones included (caption, title, geo_location, license)."""
        image: dict[str, str | None] = dict.fromkeys(_IMAGE_KEYS)
        locals_ = self._locals
        for child in el:
            image[locals_[child.tag]] = _text(child)
        if image["loc"] is None:
            return None
        image["loc"] = extension_url(image["loc"], self._base)
        return image

    def _video(self, el: Any) -> dict[str, Any]:
        """Every video child by local name; attributes as '<child>_<attr>',
        repeatable 'tag' and 'price' as lists, nested 'tvshow' as a dict."""
        video: dict[str, Any] = {}
        locals_ = self._locals
        for child in el:
            key = locals_[child.tag]
            if len(child):
                video[key] = {locals_[g.tag]: _text(g) for g in child}
                continue
            value = _text(child)
            if key.endswith("_loc"):
                value = extension_url(value, self._base)
            if key == "tag":
                video.setdefault("tag", []).append(value)
            elif key == "price":
                price = {"value": value}
                price.update((locals_[name], attr) for name, attr in child.attrib.items())
                video.setdefault("price", []).append(price)
            else:
                video[key] = value
                for name, attr in child.attrib.items():
                    video[f"{key}_{locals_[name]}"] = attr
        return video

    def _news(self, el: Any) -> dict[str, str | None]:
        """news:publication/name|language flattened to publication_name/_language."""
        news: dict[str, str | None] = {}
        locals_ = self._locals
        for child in el:
            key = locals_[child.tag]
            if key == "publication":
                for field in child:
                    news[f"publication_{locals_[field.tag]}"] = _text(field)
            else:
                news[key] = _text(child)
        return news

    def _sitemaps(self, events: Iterator[tuple[str, Any]], out: list[Entry]) -> Any:
        codes = self._codes
        el = None
        for _, el in events:
            loc = lastmod = None
            for child in el:
                tag = child.tag
                code = codes.get(tag)
                if code is None:
                    code = codes[tag] = _classify(tag, el.tag)
                if code == _LOC:
                    loc = child.text
                elif code == _LASTMOD:
                    lastmod = child.text
            accepted = self._accept(loc)
            if self.full:
                break
            if accepted is not None:
                lastmod, lastmod_at = self._dates[lastmod] if lastmod is not None else (None, None)
                out.append(ChildSitemap(accepted[0], lastmod, lastmod_at, accepted[1]))
        return el

    def _items(self, events: Iterator[tuple[str, Any]], out: list[Entry]) -> Any:
        """RSS 2.0/1.0 <item>: <link>, else a permalink <guid>; pubDate as lastmod."""
        locals_ = self._locals
        el = None
        for _, el in events:
            link = guid = date = None
            for child in el:
                name = locals_[child.tag].lower()
                if name == "link" and link is None:
                    link = _text(child) or child.get("href")  # atom:link inside RSS
                elif name == "guid" and (child.get("isPermaLink") or "true").strip().lower() != "false":
                    guid = _text(child)
                elif name in ("pubdate", "date", "updated") and date is None:
                    date = child.text
            if link is None:
                link = el.get("{http://www.w3.org/1999/02/22-rdf-syntax-ns#}about") or guid
            self._page(link, date, out)
            if self.full:
                break
        return el

    def _entries(self, events: Iterator[tuple[str, Any]], out: list[Entry]) -> Any:
        """Atom 1.0/0.3 <entry>: <link href> with rel=alternate or no rel; <updated> as lastmod."""
        locals_ = self._locals
        el = None
        for _, el in events:
            link = None
            dates: dict[str, str] = {}
            for child in el:
                name = locals_[child.tag]
                if name == "link" and link is None:
                    rel = (child.get("rel") or "alternate").strip().lower()
                    if rel == "alternate":
                        link = child.get("href")
                elif name in ("updated", "published", "modified", "issued") and child.text:
                    dates.setdefault(name, child.text)
            date = next((dates[k] for k in ("updated", "modified", "published", "issued") if k in dates), None)
            self._page(link, date, out)
            if self.full:
                break
        return el

    def _page(self, link: str | None, date: str | None, out: list[Entry]) -> None:
        accepted = self._accept(link)
        if accepted is not None:
            lastmod, lastmod_at = self._dates[date] if date is not None else (None, None)
            out.append(SitemapUrl(accepted[0], lastmod, lastmod_at, raw_loc=accepted[1]))


def _has_dtd(el: Any) -> bool:
    info = el.getroottree().docinfo
    return bool(info.doctype) or info.internalDTD is not None or info.externalDTD is not None
