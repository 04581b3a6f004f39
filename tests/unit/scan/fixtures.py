"""Sitemap bodies for the parser tests, built in code so each test shows its bytes."""

from __future__ import annotations

import gzip
import struct
import zlib
from functools import cache

from worker.scan import Entry, SitemapParser

NS = "http://www.sitemaps.org/schemas/sitemap/0.9"
IMAGE_NS = "http://www.google.com/schemas/sitemap-image/1.1"
VIDEO_NS = "http://www.google.com/schemas/sitemap-video/1.1"
NEWS_NS = "http://www.google.com/schemas/sitemap-news/0.9"
XHTML_NS = "http://www.w3.org/1999/xhtml"
ALL_NS = f'xmlns="{NS}" xmlns:image="{IMAGE_NS}" xmlns:video="{VIDEO_NS}" xmlns:news="{NEWS_NS}" xmlns:xhtml="{XHTML_NS}"'
BASE = "https://example.com/sitemap.xml"


def urlset(*urls: str, attrs: str = f'xmlns="{NS}"', declaration: bool = True) -> bytes:
    head = '<?xml version="1.0" encoding="UTF-8"?>\n' if declaration else ""
    return f"{head}<urlset {attrs}>\n{''.join(urls)}</urlset>\n".encode()


def url(loc: str, *inner: str) -> str:
    return f"  <url><loc>{loc}</loc>{''.join(inner)}</url>\n"


def numbered(count: int, host: str = "https://example.com") -> bytes:
    """A plain urlset with `count` URLs /p0 ... /p{count-1}."""
    return urlset(*(f"<url><loc>{host}/p{i}</loc></url>\n" for i in range(count)))


def parse(
    body: bytes, step: int | None = None, base: str = BASE, **limits: int
) -> tuple[SitemapParser, list[Entry]]:
    """Feed body in `step`-byte chunks (all at once if None); return the parser and all entries."""
    parser = SitemapParser(base, **limits)
    entries: list[Entry] = []
    size = step or max(len(body), 1)
    for start in range(0, len(body), size):
        entries += parser.feed(body[start : start + size])
    entries += parser.close()
    return parser, entries


def locs(entries: list[Entry]) -> list[str]:
    return [entry.loc for entry in entries]


def gzipped(body: bytes, times: int = 1) -> bytes:
    for _ in range(times):
        body = gzip.compress(body, mtime=0)
    return body


@cache
def zero_bomb(gib: int = 1) -> bytes:
    """A valid single-member gzip of `gib` GiB of zeros (~1 MB), built in ~0.3 s.

    Deflating a GiB takes seconds, so one MiB is deflated once after a full
    flush (which resets the dictionary, making every further MiB compress to
    the same bytes), that block is repeated, and the trailer gets the real
    CRC-32 and size of the whole stream.
    """
    mib = bytes(1 << 20)
    deflate = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    first = deflate.compress(mib) + deflate.flush(zlib.Z_FULL_FLUSH)
    block = deflate.compress(mib) + deflate.flush(zlib.Z_FULL_FLUSH)
    assert block == deflate.compress(mib) + deflate.flush(zlib.Z_FULL_FLUSH)
    end = deflate.flush()[:-8]  # final empty block; trailer rebuilt below
    count = gib << 10
    crc = 0
    for _ in range(count):
        crc = zlib.crc32(mib, crc)
    return first + block * (count - 1) + end + struct.pack("<II", crc, (count << 20) & 0xFFFFFFFF)


def _repeat_gzip(head: bytes, unit: bytes, mib: int) -> bytes:
    """gzip of head + unit repeated to `mib` MiB, built from one deflated MiB."""
    deflate = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    first = deflate.compress(head) + deflate.flush(zlib.Z_FULL_FLUSH)
    block_data = unit * ((1 << 20) // len(unit))
    block = deflate.compress(block_data) + deflate.flush(zlib.Z_FULL_FLUSH)
    assert block == deflate.compress(block_data) + deflate.flush(zlib.Z_FULL_FLUSH)
    return first + block * mib + deflate.flush()  # trailer CRC is wrong; never reached


LONG_LOC = "https://example.com/" + "a" * 8170  # a 8 KiB <url>: few entries per MiB


@cache
def url_bomb() -> bytes:
    """~1.3 MB of gzip inflating to a 100 MiB, perfectly valid-looking urlset."""
    head = urlset()[: -len(b"</urlset>\n")]
    return _repeat_gzip(head, url(LONG_LOC).encode(), 100)


@cache
def padding_bomb() -> bytes:
    """A sitemap whose first <url> is followed by ~1 GiB of blank lines."""
    head = urlset(url("https://example.com/first"))[: -len(b"</urlset>\n")]
    return _repeat_gzip(head, b" " * 1023 + b"\n", 1024)
