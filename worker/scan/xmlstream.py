"""Streaming XML layer: lxml pull parser in, entries out, memory flat.

The driver has already sniffed the root element, so each kind gets the
cheapest pull mode that is still exact:

* urlset / sitemapindex: one 'start' event for the root, then after every
  slice all root children but the last are complete (libxml2 builds in
  document order), so they are read straight from the tree and deleted. No
  per-entry event tuples: ~10% faster than 'end' events on plain sitemaps.
* rss / atom: 'end' events filtered at the C level (``{*}item``, ``{*}entry``),
  since entries sit below <channel> and feeds are small.

Child elements are matched by local name through a per-document tag cache
(one dict lookup per child), so namespace variants cost nothing extra.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

from lxml import etree

from worker.scan import extensions as ext
from worker.scan.model import (
    HTTP_PREFIXES,
    MAX_URL_CHARS,
    ChildSitemap,
    Entry,
    Kind,
    Memo,
    SitemapUrl,
    lastmod_pair,
    parse_changefreq,
    parse_datetime,
    parse_priority,
    resolve_loc,
)

# Hostile-input settings (sitemaps.md §2): no entity expansion, no network, no
# DTD, libxml2's default size limits. Comments/PIs/blank text are not stored,
# which also keeps the tree small. The driver refuses DOCTYPEs before lxml
# sees them; these options and the docinfo check are the second line.
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
_ENTRY = {"urlset": "url", "index": "sitemap", "rss": "item", "atom": "entry"}
_MEMO_LIMIT = 4096


class XmlStream:
    """One XML document of a known kind, fed in byte chunks."""

    def __init__(self, kind: Kind, base_url: str, max_urls: int, root: str = "") -> None:
        self._flat = kind in ("urlset", "index")
        if self._flat:  # root: the root's local name as written (tag filters are case-sensitive)
            tag = "{*}" + (root or {"urlset": "urlset", "index": "sitemapindex"}[kind])
            self._parser = etree.XMLPullParser(events=("start", "end"), tag=tag, **PARSER_OPTIONS)
        else:
            self._parser = etree.XMLPullParser(events=("end",), tag="{*}" + _ENTRY[kind], **PARSER_OPTIONS)
        self._handle = {
            "urlset": self._urls,
            "index": self._sitemaps,
            "rss": self._items,
            "atom": self._entries,
        }[kind]
        entry = _ENTRY[kind]  # plus the case variants seen in the wild, for the C-level filter
        self._entry_tags = tuple(f"{{*}}{name}" for name in (entry, entry.upper(), entry.capitalize()))
        self._root: Any = None
        self._root_closed = False
        self._base = base_url
        self._limit = max_urls
        self._codes: dict[str, int] = {}
        self._locals: Memo[str, str] = Memo(ext.local_name)
        self._names: dict[str, str] = {}  # the same, as a plain dict for the hot path
        self._dates = Memo(lastmod_pair)
        self._freqs: dict[str, str | None] = {}  # plain dicts: exact-type subscripts are fastest
        self._prios: dict[str, float | None] = {}
        self._days: dict[str, datetime | None] = {}  # date-only lastmod ("2026-11-23") -> parsed
        self._fed = 0
        self.count = 0
        self.skipped = 0  # entries without a usable loc
        self.full = False  # max_urls reached and another entry followed
        self.error: str | None = None

    def feed(self, data: bytes) -> Iterator[list[Entry]]:
        """Yield the entries completed by data, one batch per <= 64 KiB slice."""
        for start in range(0, len(data), SLICE):
            piece = data[start : start + SLICE]
            try:
                self._parser.feed(piece)
            except etree.XMLSyntaxError as exc:
                self._fail(exc, len(piece))
            out: list[Entry] = []
            self._drain(out, final=False)
            self._fed += len(piece)
            yield out
            if self.error or self.full:
                return

    def close(self, cut: bool = False) -> list[Entry]:
        """End of input. libxml2 itself tells a whole last entry from a cut one,
        so `cut` (input known to be truncated) needs no special handling here."""
        out: list[Entry] = []
        root = None
        try:
            root = self._parser.close()
            complete = True
        except etree.XMLSyntaxError as exc:
            self._fail(exc, 0)
            # Input ended with only the root left open (a file cut between two
            # entries): the last entry's end tag was parsed, so it is whole.
            # libxml2 names the innermost open element in this message; any
            # other end-of-input error means the last entry is incomplete.
            match = _EOF_IN_TAG.match(exc.msg)
            complete = bool(match and self._root is not None and _same_name(match[1], self._root.tag))
        if self.error is None and root is not None and _has_dtd(root):
            self.error = DOCTYPE_ERROR  # nothing was emitted: every drain checks first
        if self.error is None or not self.error.startswith("DOCTYPE"):
            self._drain(out, final=complete)
        return out

    def _fail(self, exc: etree.XMLSyntaxError, size: int) -> None:
        # libxml2 positions are wrong for some errors (undeclared entities) and
        # lxml's error_log stays empty in push mode, so the byte range of the
        # slice being parsed is given as a reliable bracket.
        where = (
            f"bytes {self._fed:,}-{self._fed + size:,}"
            if size
            else f"reported at end of input, byte {self._fed:,}"
        )
        self.error = f"malformed XML: {exc.msg} ({where})"

    def _drain(self, out: list[Entry], final: bool) -> None:
        """Turn every completed entry into output, then delete it from the tree."""
        if self._flat:
            for event, el in self._parser.read_events():
                # The filter matches the root's name at any depth: only the
                # document element counts (a nested <urlset> closing must not
                # make an open entry look complete, let alone deletable).
                if self._root is None:
                    if _has_dtd(el):
                        self.error = DOCTYPE_ERROR
                        return
                    self._root = el
                elif event == "end" and el is self._root:
                    self._root_closed = True
            root = self._root
            count = len(root) if root is not None else 0
            if not count:
                return
            # All root children but the last are complete (libxml2 builds in
            # document order); the last one is complete only once the root
            # is, or when the input ended right after it (see close()). An
            # entry is never emitted before its end tag was parsed. Entries
            # are picked out by lxml's C-level tag filter.
            last = None if final or self._root_closed else root[-1]
            self._handle(root.iterchildren(self._entry_tags), last, out)
            del root[: count if last is None else count - 1]  # entries and stray siblings
        else:
            done = [el for _, el in self._parser.read_events()]
            if not done:
                return
            if self._root is None:
                if _has_dtd(done[0]):
                    self.error = DOCTYPE_ERROR
                    return
                self._root = done[0].getroottree().getroot()
            self._handle(done, None, out)
            parent = done[-1].getparent()
            if parent is not None:
                del parent[:-1]  # finished entries and stray siblings; the last one may still be open
        memos = (self._prios, self._freqs, self._days, self._codes, self._names)
        if max(map(len, memos)) > _MEMO_LIMIT:
            for memo in memos:
                memo.clear()  # hostile files (endless distinct values or tag names) stay bounded

    def _urls(self, elements: Iterable[Any], last: Any, out: list[Entry]) -> None:
        """The hot loop: everything that runs once per <url> is inlined here."""
        codes, base, limit = self._codes, self._base, self._limit
        freqs, prios, days, fromiso = self._freqs, self._prios, self._days, datetime.fromisoformat
        count, skipped = self.count, self.skipped
        first_extension, new_url, http = ext.IMAGE, SitemapUrl, HTTP_PREFIXES
        for el in elements:
            if el is last:
                break
            fields: list[str | None] = [None, None, None, None, None]  # indexed by code
            extra = None
            for child in el[:]:  # a C-built list: ~40% cheaper than the child iterator
                child_tag = child.tag
                try:
                    code = codes[child_tag]
                except KeyError:
                    code = codes[child_tag] = ext.classify(child_tag, el.tag)
                if code < first_extension:
                    fields[code] = child.text
                else:
                    if extra is None:
                        extra = []
                    extra.append((code, child))
            _, loc, lastmod, changefreq, priority = fields
            if loc is None:
                skipped += 1
                continue
            loc = loc.strip()
            if loc.startswith(http) and len(loc) <= MAX_URL_CHARS:
                raw = None
            else:
                resolved = resolve_loc(loc, base)
                if resolved is None:
                    skipped += 1
                    continue
                loc, raw = resolved
            if count >= limit:
                self.full = True
                break
            count += 1
            if lastmod is None:
                lastmod_at = None
            else:  # inlined: timestamps are mostly unique; dates ("2026-11-23") repeat
                lastmod = lastmod.strip()
                if len(lastmod) == 10:
                    try:
                        lastmod_at = days[lastmod]
                    except KeyError:
                        lastmod_at = days[lastmod] = parse_datetime(lastmod)
                else:
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
                    prios[priority] = number = parse_priority(priority)
                    priority = number
            if extra is None:
                if raw is None:
                    out.append(new_url(loc, lastmod, lastmod_at, changefreq, priority))
                else:
                    out.append(SitemapUrl(loc, lastmod, lastmod_at, changefreq, priority, raw_loc=raw))
            else:
                images, videos, news, alternates = ext.extensions(extra, base, self._names)
                out.append(
                    SitemapUrl(
                        loc, lastmod, lastmod_at, changefreq, priority,
                        images, videos, news, alternates, raw,
                    )
                )  # fmt: skip
        self.count, self.skipped = count, skipped

    def _accept(self, text: str | None) -> tuple[str, str | None] | None:
        """Resolve and count one loc; None when it must not be emitted."""
        resolved = resolve_loc(text, self._base) if text else None
        if resolved is None:
            self.skipped += 1
            return None
        if self.count >= self._limit:
            self.full = True
            return None
        self.count += 1
        return resolved

    def _sitemaps(self, elements: Iterable[Any], last: Any, out: list[Entry]) -> None:
        codes = self._codes
        for el in elements:
            if el is last:
                break
            loc = lastmod = None
            for child in el[:]:
                tag = child.tag
                try:
                    code = codes[tag]
                except KeyError:
                    code = codes[tag] = ext.classify(tag, el.tag)
                if code == ext.LOC:
                    loc = child.text
                elif code == ext.LASTMOD:
                    lastmod = child.text
            accepted = self._accept(loc)
            if self.full:
                break
            if accepted is not None:
                lastmod, lastmod_at = self._dates[lastmod] if lastmod is not None else (None, None)
                out.append(ChildSitemap(accepted[0], lastmod, lastmod_at, accepted[1]))

    def _items(self, elements: Iterable[Any], last: Any, out: list[Entry]) -> None:
        """RSS 2.0/1.0 <item>: <link>, else a permalink <guid>; pubDate as lastmod."""
        locals_ = self._locals
        for el in elements:
            link = guid = date = None
            for child in el:
                name = locals_[child.tag].lower()
                if name == "link" and link is None:
                    link = ext.text_of(child) or child.get("href")  # atom:link inside RSS
                elif name == "guid" and (child.get("isPermaLink") or "true").strip().lower() != "false":
                    guid = ext.text_of(child)  # a permalink is absolute; "xyz" ids are not pages
                    if guid is not None and not guid[:8].lower().startswith(HTTP_PREFIXES):
                        guid = None
                elif name in ("pubdate", "date", "updated") and date is None:
                    date = child.text
            if link is None:
                link = el.get("{http://www.w3.org/1999/02/22-rdf-syntax-ns#}about") or guid
            self._page(link, date, out)
            if self.full:
                break

    def _entries(self, elements: Iterable[Any], last: Any, out: list[Entry]) -> None:
        """Atom 1.0/0.3 <entry>: <link href> with rel=alternate or no rel; <updated> as lastmod."""
        locals_ = self._locals
        for el in elements:
            link = None
            dates: dict[str, str] = {}
            for child in el:
                name = locals_[child.tag]
                if name == "link" and link is None:
                    if (child.get("rel") or "alternate").strip().lower() == "alternate":
                        link = child.get("href")
                elif name in ("updated", "published", "modified", "issued") and child.text:
                    dates.setdefault(name, child.text)
            date = next(
                (dates[k] for k in ("updated", "modified", "published", "issued") if k in dates), None
            )
            self._page(link, date, out)
            if self.full:
                break

    def _page(self, link: str | None, date: str | None, out: list[Entry]) -> None:
        accepted = self._accept(link)
        if accepted is not None:
            lastmod, lastmod_at = self._dates[date] if date is not None else (None, None)
            out.append(SitemapUrl(accepted[0], lastmod, lastmod_at, raw_loc=accepted[1]))


_EOF_IN_TAG = re.compile(r"Premature end of data in tag (\S+) line")


def _same_name(qname: str, tag: str) -> bool:
    return qname.rpartition(":")[2] == ext.local_name(tag)


def _has_dtd(el: Any) -> bool:
    info = el.getroottree().docinfo
    return bool(info.doctype) or info.internalDTD is not None or info.externalDTD is not None
