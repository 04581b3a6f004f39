"""Plain-text sitemaps: one http(s) URL per line (sitemaps.org "Other formats").

sitemaps.org asks for UTF-8, but legacy files exist. Each line is read as
UTF-8 when it is valid UTF-8 (legacy text almost never is), else in the
charset the server declared, else in windows-1252 (latin-1 for its five
unassigned bytes): never U+FFFD for bytes that were valid text.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterator

from worker.scan.model import Entry, SitemapUrl, resolve_loc

MAX_TEXT_LINE = 8192  # longer lines are skipped without being buffered
SLICE = 64 * 1024


class TextStream:
    """Plain-text sitemap: one http(s) URL per line; everything else is skipped."""

    _LINE = re.compile(
        rb"^[ \t]*(https?://[^\s]{1,%d})[ \t]*$" % MAX_TEXT_LINE, re.MULTILINE | re.IGNORECASE
    )

    def __init__(
        self, base_url: str, max_urls: int, encoding: str, charset: str | None = None
    ) -> None:
        """encoding: the sniffed one (utf-8, or utf-16 from a BOM); charset: the
        Content-Type's, if any, tried for lines that are not UTF-8."""
        self._base = base_url
        self._legacy = _legacy_codec(charset)
        self._limit = max_urls
        self._pending = b""
        self._skip_line = False  # inside an over-long line: drop up to the next newline
        self._decoder = (
            None if encoding == "utf-8" else codecs.getincrementaldecoder(encoding)("replace")
        )
        self.count = self.skipped = 0
        self.full = False
        self.error: str | None = None

    def feed(self, data: bytes) -> Iterator[list[Entry]]:
        """Yield the entries of the complete lines, one batch per <= 64 KiB."""
        for start in range(0, len(data), SLICE):
            yield self._slice(data[start : start + SLICE])
            if self.full:
                return

    def _slice(self, data: bytes) -> list[Entry]:
        if self._decoder is not None:
            data = self._decoder.decode(data).encode("utf-8")
        buf = (self._pending + data).replace(b"\r", b"\n")
        if self._skip_line:
            newline = buf.find(b"\n")
            if newline < 0:
                self._pending = b""
                return []
            buf, self._skip_line = buf[newline:], False
        cut = buf.rfind(b"\n") + 1
        self._pending = buf[cut:]
        if len(self._pending) > MAX_TEXT_LINE:
            self._pending, self._skip_line = b"", True
        return self._lines(buf, cut)

    def close(self, cut: bool = False) -> list[Entry]:
        """End of text. A last line without its newline is kept only when the
        body ended normally: with cut (input known to be truncated) it may be
        a partial URL and is dropped."""
        out = [] if cut or self._skip_line else self._lines(self._pending, len(self._pending))
        if self.count == 0 and not self.full:
            self.error = "no URLs found in the plain-text body"
        return out

    def _lines(self, buf: bytes, end: int) -> list[Entry]:
        out: list[Entry] = []
        for match in self._LINE.finditer(buf, 0, end):
            raw = match[1]
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                text = _decode_legacy(raw, self._legacy)
            resolved = resolve_loc(text, self._base)
            if resolved is None:
                self.skipped += 1
            elif self.count >= self._limit:
                self.full = True
                break
            else:
                self.count += 1
                out.append(SitemapUrl(resolved[0]))
        return out


def _legacy_codec(charset: str | None) -> str | None:
    """A declared charset usable line by line (ASCII-compatible), else None."""
    if not charset:
        return None
    try:
        name = codecs.lookup(charset.strip().strip("\"'")).name
    except (LookupError, ValueError):
        return None
    if name == "utf-8" or name.startswith(("utf-16", "utf-32")):
        return None  # utf-8 is tried first anyway; the wide ones come with a BOM
    try:
        ascii_compatible = "https://x\n".encode(name) == b"https://x\n"
    except (UnicodeError, LookupError):
        return None
    return name if ascii_compatible else None


def _decode_legacy(raw: bytes, charset: str | None) -> str:
    if charset is not None:
        try:
            return raw.decode(charset)
        except UnicodeDecodeError:
            pass
    try:
        return raw.decode("cp1252")
    except UnicodeDecodeError:  # 0x81, 0x8D, 0x8F, 0x90, 0x9D: unassigned in cp1252
        return raw.decode("latin-1")
