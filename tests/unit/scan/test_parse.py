"""SitemapParser against the real-world cases of sitemaps.md §5.2 and hostile input.

Every body is built in the test (fixtures.py); no network, no mocks. Many
cases are fed in 7-byte chunks to show that chunk boundaries do not matter.
"""

from __future__ import annotations

import codecs
import gzip
import io
import time
import tracemalloc
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from tests.unit.scan.fixtures import (
    ALL_NS,
    BASE,
    IMAGE_NS,
    LONG_LOC,
    NEWS_NS,
    NS,
    VIDEO_NS,
    XHTML_NS,
    gzipped,
    locs,
    numbered,
    padding_bomb,
    parse,
    url,
    url_bomb,
    urlset,
    zero_bomb,
)
from worker.scan import ChildSitemap, SitemapParser, SitemapUrl
from worker.scan.xmlstream import XmlStream

TWO = urlset(url("https://example.com/a"), url("https://example.com/b"))


# --- chunking -------------------------------------------------------------------------


@pytest.mark.parametrize("step", [1, 7, 64, 4096, None])
def test_chunk_boundaries_do_not_matter(step: int | None) -> None:
    body = urlset(
        url(
            "https://example.com/a?x=1&amp;y=2",
            "<lastmod>2024-01-08</lastmod><changefreq>daily</changefreq><priority>0.8</priority>",
            "<image:image><image:loc>https://example.com/i.jpg</image:loc></image:image>",
            '<xhtml:link rel="alternate" hreflang="de" href="https://example.de/a"/>',
        ),
        url("/relative"),
        attrs=ALL_NS,
    )
    parser, entries = parse(body, step)
    assert parser.kind == "urlset" and parser.error is None and not parser.truncated
    assert entries == [
        SitemapUrl(
            "https://example.com/a?x=1&y=2",
            "2024-01-08",
            datetime(2024, 1, 8, tzinfo=UTC),
            "daily",
            0.8,
            images=(
                {
                    "loc": "https://example.com/i.jpg",
                    "caption": None,
                    "title": None,
                    "geo_location": None,
                    "license": None,
                },
            ),
            alternates=({"hreflang": "de", "href": "https://example.de/a"},),
        ),
        SitemapUrl("https://example.com/relative", raw_loc="/relative"),
    ]
    assert parser.url_count == 2 and parser.bytes_in == parser.bytes_out == len(body)


def test_entries_stream_out_before_close() -> None:
    parser = SitemapParser(BASE)
    body = numbered(3000)
    first = parser.feed(body[: len(body) // 2])
    assert 1000 < len(first) < 1600  # emitted while the document is still open
    rest = parser.feed(body[len(body) // 2 :]) + parser.close()
    assert locs(first + rest) == [f"https://example.com/p{i}" for i in range(3000)]


def test_feed_after_close_is_refused_and_close_is_idempotent() -> None:
    parser = SitemapParser(BASE)
    assert len(parser.feed(TWO) + parser.close()) == 2
    assert parser.close() == []
    with pytest.raises(RuntimeError):
        parser.feed(b"<urlset/>")


# --- transport / container (§5.2 items 1-8) ---------------------------------------------


@pytest.mark.parametrize(
    "base",
    [
        "https://example.com/sitemap.php?page=2",
        "https://example.com/feed",
        "https://example.com/s.xml.gz",
    ],
)
def test_kind_comes_from_content_not_from_the_url(base: str) -> None:
    parser, entries = parse(TWO, base=base)
    assert parser.kind == "urlset" and locs(entries) == [
        "https://example.com/a",
        "https://example.com/b",
    ]


@pytest.mark.parametrize(
    "body",
    [
        b"<!DOCTYPE html>\n<html><head><title>Not found</title></head><body>404</body></html>",
        b"\n\n<!doctype HTML PUBLIC '-//W3C//DTD HTML 4.01//EN'><html>",
        (
            b'<?xml version="1.0"?>\n<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Strict//EN" "x.dtd">'
            b'<html xmlns="http://www.w3.org/1999/xhtml"><body>login</body></html>'
        ),
        b"<!-- cache 2024 -->\n<html lang=en><body>",
        b"<HTML><BODY>soft 404</BODY></HTML>",
    ],
)
def test_html_served_as_sitemap(body: bytes) -> None:
    parser, entries = parse(body, 7)
    assert (parser.kind, parser.error, entries) == ("html", "HTML page, not a sitemap", [])


def test_gzip_is_detected_by_magic_bytes_without_gz_extension() -> None:
    parser, entries = parse(gzipped(TWO), 7, base="https://example.com/sitemap")
    assert parser.kind == "urlset" and parser.error is None
    assert locs(entries) == ["https://example.com/a", "https://example.com/b"]
    assert parser.bytes_in == len(gzipped(TWO)) and parser.bytes_out == len(TWO)


def test_gzip_header_with_file_name_split_across_one_byte_chunks() -> None:
    buffer = io.BytesIO()
    with gzip.GzipFile(
        filename="sitemap-products-1.xml", mode="wb", fileobj=buffer, mtime=0
    ) as out:
        out.write(TWO)
    body = buffer.getvalue()
    assert body[3] & 0x08  # FNAME set
    parser, entries = parse(body, 1)
    assert parser.error is None and len(entries) == 2


def test_double_gzip_is_unwrapped() -> None:
    parser, entries = parse(gzipped(TWO, times=2), 7)
    assert parser.error is None and len(entries) == 2 and parser.bytes_out == len(TWO)


def test_triple_gzip_is_refused() -> None:
    parser, entries = parse(gzipped(TWO, times=3))
    assert entries == [] and parser.error == "gzip nested more than 2 levels deep"


def test_gzipped_plain_text_sitemap() -> None:
    parser, entries = parse(gzipped(b"https://example.com/a\nhttps://example.com/b\n"), 7)
    assert parser.kind == "text" and locs(entries) == [
        "https://example.com/a",
        "https://example.com/b",
    ]


def test_gzip_with_trailing_junk_keeps_everything() -> None:
    """wpull#484: WP Super Cache appends an uncompressed comment to the .xml.gz."""
    parser, entries = parse(gzipped(TWO) + b"<!-- Dynamic page generated in 0.2 seconds. -->", 7)
    assert parser.error is None and len(entries) == 2


def test_gzip_with_bad_crc_keeps_everything() -> None:
    body = bytearray(gzipped(TWO))
    body[-8] ^= 0xFF  # CRC-32 of the trailer
    parser, entries = parse(bytes(body))
    assert parser.error is None and len(entries) == 2


def test_concatenated_gzip_members_are_one_body() -> None:
    half = len(TWO) // 2
    parser, entries = parse(gzipped(TWO[:half]) + gzipped(TWO[half:]), 5)
    assert parser.error is None and len(entries) == 2


def test_truncated_gzip_keeps_complete_entries_and_says_so() -> None:
    body = gzipped(numbered(500))
    parser, entries = parse(body[: len(body) * 2 // 3], 7)
    assert parser.error is not None and parser.error.startswith("gzip data truncated")
    assert 100 < len(entries) < 500 and not parser.truncated
    assert locs(entries) == [f"https://example.com/p{i}" for i in range(len(entries))]


def test_truncated_gzip_text_drops_the_cut_line() -> None:
    text = b"".join(b"https://example.com/page-%d\n" % i for i in range(2000))
    body = gzipped(text)
    parser, entries = parse(body[: len(body) // 2])
    assert parser.error == "gzip data truncated"
    assert locs(entries) == [f"https://example.com/page-{i}" for i in range(len(entries))]


@pytest.mark.parametrize("step", [7, None])
def test_truncated_mid_url_never_emits_a_partial_url(step: int | None) -> None:
    """USP keeps going; Scrapy's recover mode emitted https://www.exa (sitemaps.md §5.1)."""
    body = numbered(3) + b""
    cut = body.index(b"/p2") + 2  # inside the third <loc>
    parser, entries = parse(body[:cut], step)
    assert locs(entries) == ["https://example.com/p0", "https://example.com/p1"]
    assert parser.error is not None and parser.error.startswith("malformed XML: ")
    assert not parser.truncated


@pytest.mark.parametrize("tail", [b"</url>\n", b"</url>", b"</url>\n  <ur", b"</url>\n  <url"])
def test_truncated_between_urls_keeps_the_last_whole_one(tail: bytes) -> None:
    body = numbered(3)
    cut = body.index(b"/p1</loc>") + len(b"/p1</loc>")
    parser, entries = parse(body[:cut] + tail, 7)
    assert locs(entries) == ["https://example.com/p0", "https://example.com/p1"]
    assert parser.error is not None


def test_truncated_inside_an_end_tag_drops_that_url() -> None:
    body = numbered(3)
    cut = body.index(b"/p1</loc></ur") + len(b"/p1</loc></ur")
    parser, entries = parse(body[:cut])
    assert locs(entries) == ["https://example.com/p0"] and parser.error is not None


# --- XML content (§5.2 items 12-19) ----------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        codecs.BOM_UTF8 + TWO,
        b"\n\n   \r\n" + TWO,  # blank lines before <?xml: a strict parser refuses this
        codecs.BOM_UTF8 + b"\n  " + TWO,
        urlset(url("https://example.com/a"), url("https://example.com/b"), declaration=False),
        b'<?xml version="1.0"?><?xml-stylesheet type="text/xsl" href="/sitemap.xsl"?>\n<!-- Yoast -->'
        + TWO[TWO.index(b"<urlset") :],
    ],
)
def test_prolog_variants(body: bytes) -> None:
    parser, entries = parse(body, 7)
    assert parser.error is None and locs(entries) == [
        "https://example.com/a",
        "https://example.com/b",
    ]


@pytest.mark.parametrize("encoding", ["iso-8859-1", "windows-1252"])
def test_declared_single_byte_encoding_is_honoured(encoding: str) -> None:
    body = f'<?xml version="1.0" encoding="{encoding}"?><urlset><url><loc>https://example.com/café</loc></url></urlset>'
    parser, entries = parse(body.encode(encoding), 3)
    assert parser.error is None and locs(entries) == ["https://example.com/café"]


@pytest.mark.parametrize("codec", ["utf-16", "utf-16-le", "utf-16-be"])
def test_utf16(codec: str) -> None:
    text = f'<?xml version="1.0" encoding="UTF-16"?>\n<urlset xmlns="{NS}"><url><loc>https://example.com/ü</loc></url></urlset>'
    body = text.encode(codec)
    if codec != "utf-16":  # "utf-16" writes a BOM; the others need one declared by hand
        body = (codecs.BOM_UTF16_LE if codec.endswith("le") else codecs.BOM_UTF16_BE) + body
    parser, entries = parse(body, 7)
    assert (
        parser.kind == "urlset"
        and parser.error is None
        and locs(entries) == ["https://example.com/ü"]
    )


@pytest.mark.parametrize(
    "body",
    [
        urlset(url("https://example.com/a"), url("https://example.com/b"), attrs=""),
        urlset(
            url("https://example.com/a"),
            url("https://example.com/b"),
            attrs='xmlns="http://www.google.com/schemas/sitemap/0.84"',
        ),
        urlset(
            url("https://example.com/a"),
            url("https://example.com/b"),
            attrs='xmlns="https://www.sitemaps.org/schemas/sitemap/0.9"',
        ),
        (
            f'<s:urlset xmlns:s="{NS}"><s:url><s:loc>https://example.com/a</s:loc></s:url>'
            f"<s:url><s:loc>https://example.com/b</s:loc></s:url></s:urlset>"
        ).encode(),
        (
            f'<urlset xmlns="{NS}"><url xmlns=""><loc>https://example.com/a</loc></url>'
            f"<url><loc>https://example.com/b</loc></url></urlset>"
        ).encode(),
        (
            b"<urlset xmlns='http://www.sitemaps.org/schemas/sitemap/0.9'>"
            b"<URL><loc>https://example.com/a</loc></URL><url><loc>https://example.com/b</loc></url></urlset>"
        ),
    ],
    ids=["none", "google-0.84", "https-ns", "prefixed", "xmlns-empty", "upper-case-url"],
)
def test_namespace_variants(body: bytes) -> None:
    parser, entries = parse(body, 7)
    assert parser.kind == "urlset" and parser.error is None
    assert locs(entries) == ["https://example.com/a", "https://example.com/b"]


def test_whitespace_newlines_tabs_and_cdata_in_loc() -> None:
    body = urlset(
        "<url><loc>\n\t  https://example.com/a  \n</loc></url>",
        "<url><loc><![CDATA[ https://example.com/b?x=1&y=2 ]]></loc></url>",
        "<url><loc>  <![CDATA[/c]]>\n</loc></url>",
    )
    _, entries = parse(body, 7)
    assert locs(entries) == [
        "https://example.com/a",
        "https://example.com/b?x=1&y=2",
        "https://example.com/c",
    ]


def test_entities_and_character_references() -> None:
    body = urlset(
        url("https://example.com/a?x=1&amp;y=2&#38;z=&#x33;"), url("https://example.com/&lt;b&gt;")
    )
    _, entries = parse(body)
    assert locs(entries) == ["https://example.com/a?x=1&y=2&z=3", "https://example.com/<b>"]


@pytest.mark.parametrize("step", [7, None])
def test_raw_ampersand_drops_the_entry_never_mangles_it(step: int | None) -> None:
    """Scrapy's recover mode turned ?x=1&y=2 into /a?x=1=2 (sitemaps.md §5.1)."""
    body = urlset(
        url("https://example.com/ok"),
        url("https://example.com/a?x=1&y=2"),
        url("https://example.com/after"),
    )
    parser, entries = parse(body, step)
    assert locs(entries) == ["https://example.com/ok"]
    assert parser.error is not None and "EntityRef" in parser.error and not parser.truncated


def test_undeclared_html_entity_keeps_entries_before_it() -> None:
    body = urlset(
        url("https://example.com/ok"),
        url("https://example.com/a&nbsp;b"),
        url("https://example.com/c"),
    )
    parser, entries = parse(body, 7)
    assert locs(entries) == ["https://example.com/ok"] and parser.error is not None


def test_control_character_is_an_error_after_the_good_entries() -> None:
    body = urlset(
        url("https://example.com/ok"),
        url("https://example.com/a\x0cb"),
        url("https://example.com/c"),
    )
    parser, entries = parse(body)
    assert locs(entries) == ["https://example.com/ok"]
    assert parser.error is not None and "invalid Char value 12" in parser.error


def test_comments_and_processing_instructions_inside_url() -> None:
    body = urlset(
        "<url><!-- c --><loc>https://example.com/a</loc><?pi x?><lastmod>2024-01-01<!-- x --></lastmod></url>",
        "<url><loc>https://example.com/<!-- split -->b</loc></url>",
    )
    parser, entries = parse(body, 7)
    assert parser.error is None
    assert [(e.loc, e.lastmod) for e in entries] == [
        ("https://example.com/a", "2024-01-01"),
        ("https://example.com/b", None),
    ]


def test_trailing_comment_after_root_is_fine_trailing_element_is_an_error() -> None:
    parser, entries = parse(TWO + b"<!-- served by cache -->\n")
    assert parser.error is None and len(entries) == 2
    parser, entries = parse(TWO + b"<p>stray</p>", 7)
    assert len(entries) == 2
    assert parser.error is not None and "Extra content at the end of the document" in parser.error


def test_url_without_loc_does_not_leak_into_the_next() -> None:
    """crawlee PR #3795: metadata of a loc-less <url> ended up on the next one."""
    body = urlset(
        "<url><lastmod>2020-01-01</lastmod><priority>0.1</priority></url>",
        url("https://example.com/a"),
        "<url><loc>   </loc><priority>0.9</priority></url>",
        url("https://example.com/b", "<lastmod/>"),
    )
    parser, entries = parse(body, 7)
    assert entries == [SitemapUrl("https://example.com/a"), SitemapUrl("https://example.com/b")]
    assert parser.skipped == 2


def test_duplicates_are_kept_as_published() -> None:
    """The store deduplicates with a unique key; the parser reports what the file says."""
    _, entries = parse(
        urlset(
            url("https://example.com/a"), url("https://example.com/a"), url("https://example.com/b")
        )
    )
    assert locs(entries) == [
        "https://example.com/a",
        "https://example.com/a",
        "https://example.com/b",
    ]


def test_undeclared_extension_prefix_keeps_entries_and_flags_the_file() -> None:
    body = f'<urlset xmlns="{NS}"><url><loc>https://example.com/a</loc><image:image>'
    body += "<image:loc>https://example.com/i.jpg</image:loc></image:image></url></urlset>"
    parser, entries = parse(body.encode(), 7)
    assert locs(entries) == ["https://example.com/a"]
    assert entries[0].images[0]["loc"] == "https://example.com/i.jpg"
    assert parser.error is not None and "Namespace prefix image" in parser.error


# --- hostile input (sitemaps.md §2) ------------------------------------------------------------


def test_billion_laughs_is_refused_at_once() -> None:
    lol = ['<!ENTITY lol "lol">'] + [
        f'<!ENTITY lol{i} "{"&lol%s;" % ("" if i == 1 else i - 1) * 10}">' for i in range(1, 10)
    ]
    body = f'<?xml version="1.0"?>\n<!DOCTYPE urlset [{"".join(lol)}]>\n<urlset><url><loc>https://example.com/&lol9;</loc></url></urlset>'
    started = time.perf_counter()
    parser, entries = parse(body.encode(), 7)
    assert time.perf_counter() - started < 0.5
    assert (
        entries == []
        and parser.error is not None
        and parser.error.startswith("DOCTYPE not allowed")
    )


@pytest.mark.parametrize(
    "template",
    [
        (
            '<?xml version="1.0"?><!DOCTYPE urlset [<!ENTITY xxe SYSTEM "file://{path}">]>'
            "<urlset><url><loc>https://example.com/&xxe;</loc><lastmod>&xxe;</lastmod></url></urlset>"
        ),
        '<!-- hi --><!DOCTYPE urlset SYSTEM "file://{path}"><urlset><url><loc>https://example.com/a</loc></url></urlset>',
        '<?xml version="1.0"?><!DOCTYPE urlset [<!ENTITY % p SYSTEM "file://{path}"> %p;]><urlset/>',
        '<?xml version="1.0"?><!doctype urlset [<!ENTITY xxe SYSTEM "file://{path}">]><urlset><url><loc>&xxe;</loc></url></urlset>',
    ],
)
@pytest.mark.parametrize("codec", ["utf-8", "utf-16"])
def test_xxe_never_reads_a_local_file(tmp_path: Path, template: str, codec: str) -> None:
    secret = "sitemap-secret-7f3a9c"
    path = tmp_path / "secret.txt"
    path.write_text(f"https://example.com/{secret}\n")
    body = template.format(path=path).encode(codec)
    parser, entries = parse(body, 7)
    assert entries == []
    assert parser.error is not None and parser.error.startswith("DOCTYPE not allowed")
    assert secret not in repr(entries) + repr(vars(parser)) + str(parser.error)


def test_doctype_hidden_by_an_exotic_encoding_is_still_refused(tmp_path: Path) -> None:
    """The byte-level prolog check cannot read EBCDIC, so such a body is not taken for XML at all."""
    secret = "sitemap-secret-ebcdic"
    path = tmp_path / "secret.txt"
    path.write_text(secret)
    text = (
        f'<!DOCTYPE urlset [<!ENTITY xxe SYSTEM "file://{path}">]>'
        "<urlset><url><loc>https://example.com/&xxe;</loc></url></urlset>"
    )
    body = b'<?xml version="1.0" encoding="IBM037"?>' + text.encode("cp037")
    parser, entries = parse(body)
    assert entries == [] and secret not in repr(entries) + str(parser.error)
    assert parser.error is not None


@pytest.mark.parametrize("kind", ["urlset", "rss"])
def test_xml_layer_refuses_a_doctype_on_its_own(kind: str) -> None:
    """Second line of defence: XmlStream checks lxml's docinfo before emitting anything."""
    entry = (
        "<url><loc>https://example.com/&x;</loc></url>"
        if kind == "urlset"
        else "<item><link>https://example.com/&x;</link></item>"
    )
    root = "urlset" if kind == "urlset" else "rss"
    body = f'<!DOCTYPE {root} [<!ENTITY x "expanded">]><{root}>{entry * 3}</{root}>'.encode()
    stream = XmlStream(kind, BASE, 10, root)
    entries = [e for batch in stream.feed(body) for e in batch] + stream.close()
    assert (
        entries == []
        and stream.error is not None
        and stream.error.startswith("DOCTYPE not allowed")
    )


def test_nested_root_name_does_not_complete_an_open_entry() -> None:
    body = urlset(
        url("https://example.com/a"), "<url><loc>https://example.com/b</loc><urlset></urlset>"
    )
    parser, entries = parse(body[: -len(b"</urlset>\n")], 7)
    assert locs(entries) == ["https://example.com/a"] and parser.error is not None


def _parse_discarding(
    body: bytes, step: int = 64 * 1024, **limits: int
) -> tuple[SitemapParser, int, list[str]]:
    """Feed like the worker does (batches handed on, not kept); returns the parser, count and first locs."""
    parser = SitemapParser(BASE, **limits)
    count, first = 0, []
    for start in range(0, len(body), step):
        for batch in parser.feed_batches(body[start : start + step]):
            count += len(batch)
            first += [e.loc for e in batch[: 3 - len(first)]]
    count += len(parser.close())
    return parser, count, first


def test_gzip_bomb_of_zeros_stops_early_in_bounded_memory() -> None:
    bomb = zero_bomb()  # 1 GiB of zeros in ~1 MB
    tracemalloc.start()
    try:
        started = time.perf_counter()
        parser, count, _ = _parse_discarding(bomb)
        elapsed = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert count == 0 and parser.kind == "unknown"
    assert parser.error == "binary content, not a sitemap"
    assert (
        parser.bytes_in == len(bomb) and parser.bytes_out <= 64 * 1024
    )  # nothing inflated past the sniff
    assert elapsed < 1.0 and peak < 4 * 2**20


def test_gzip_bomb_stops_at_the_uncompressed_cap() -> None:
    bomb = url_bomb()  # 100 MiB of valid 8 KiB <url>s in ~140 KB
    tracemalloc.start()
    try:
        parser, count, first = _parse_discarding(bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    cap = 50 * 1024 * 1024
    assert parser.truncated and parser.bytes_out == cap
    assert parser.error == f"uncompressed size exceeds max_uncompressed_bytes={cap:,}"
    per_url = len(url(LONG_LOC))
    assert count == parser.url_count == (cap - len(urlset()) + len("</urlset>\n")) // per_url
    assert first == [LONG_LOC] * 3
    assert peak < 8 * 2**20


def test_feed_returns_the_same_entries_as_feed_batches() -> None:
    body = gzipped(numbered(5000))
    parser = SitemapParser(BASE)
    batches = list(parser.feed_batches(body))
    assert len(batches) > 1  # one compressed chunk, several bounded batches
    assert [e for batch in batches for e in batch] + parser.close() == parse(body)[1]


def test_cap_cut_never_emits_the_cut_url() -> None:
    body = urlset(*(url(LONG_LOC) for _ in range(10)))
    parser, entries = parse(
        body, 4096, max_uncompressed_bytes=len(urlset()) + 5 * len(url(LONG_LOC)) - 100
    )
    assert parser.truncated and {e.loc for e in entries} == {LONG_LOC} and len(entries) == 4


def test_whitespace_bomb_hits_libxml2_text_limit_in_bounded_memory() -> None:
    bomb = padding_bomb()  # 1 GiB of blank lines after one <url>
    tracemalloc.start()
    try:
        parser, _, _ = _parse_discarding(bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert parser.error is not None and parser.error.startswith("malformed XML")
    assert parser.bytes_out < 20 * 2**20 and peak < 4 * 2**20


def test_byte_cap_applies_to_plain_input_too() -> None:
    parser, entries = parse(numbered(1000), 500, max_uncompressed_bytes=10_000)
    assert parser.truncated and parser.bytes_out == 10_000 and parser.error is not None
    assert 100 < len(entries) < 300
    assert locs(entries) == [f"https://example.com/p{i}" for i in range(len(entries))]


def test_max_urls_truncates_and_flags() -> None:
    parser, entries = parse(numbered(50_001))
    assert (
        len(entries) == parser.url_count == 50_000
        and entries[-1].loc == "https://example.com/p49999"
    )
    assert parser.truncated and parser.error == "too many URLs: stopped at max_urls=50,000"
    parser, entries = parse(numbered(50_000))
    assert len(entries) == 50_000 and not parser.truncated and parser.error is None


def test_max_urls_in_text_and_index() -> None:
    text = b"".join(b"https://example.com/%d\n" % i for i in range(11))
    parser, entries = parse(text, 7, max_urls=10)
    assert parser.truncated and len(entries) == 10
    index = (
        b"<sitemapindex>"
        + b"".join(b"<sitemap><loc>/s%d.xml</loc></sitemap>" % i for i in range(4))
        + b"</sitemapindex>"
    )
    parser, entries = parse(index, max_urls=3)
    assert parser.truncated and [e.loc for e in entries] == [
        f"https://example.com/s{i}.xml" for i in range(3)
    ]


def test_memory_stays_flat_on_a_large_file() -> None:
    body = numbered(20_000)
    tracemalloc.start()
    try:
        parser, count, _ = _parse_discarding(body)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert count == 20_000 and parser.error is None
    assert peak < 2 * 2**20  # the 1.5 MB body is not even held: entries leave per chunk


# --- URLs (§5.2 items 21-25) ---------------------------------------------------------------------


def test_relative_and_protocol_relative_locs_are_resolved_and_flagged() -> None:
    body = urlset(
        url("/a"), url("b/c?x=1"), url("//cdn.example.net/d"), url("https://example.com/e")
    )
    _, entries = parse(body, base="https://example.com/sitemaps/main.xml")
    assert [(e.loc, e.raw_loc) for e in entries] == [
        ("https://example.com/a", "/a"),
        ("https://example.com/sitemaps/b/c?x=1", "b/c?x=1"),
        ("https://cdn.example.net/d", "//cdn.example.net/d"),
        ("https://example.com/e", None),
    ]


def test_non_http_schemes_are_dropped() -> None:
    body = urlset(
        url("javascript:alert(1)"), url("mailto:a@example.com"), url("ftp://example.com/x"), url("data:text/plain,x"),
        url("HTTPS://EXAMPLE.COM/Upper"), url("http://example.com/plain"),
    )  # fmt: skip
    parser, entries = parse(body)
    assert (
        locs(entries) == ["HTTPS://EXAMPLE.COM/Upper", "http://example.com/plain"]
        and parser.skipped == 4
    )


def test_urls_are_never_cleaned() -> None:
    """courlan strips utm_* and sorts the query (sitemaps.md §5.2 item 25); we do not."""
    raw = [
        "https://example.com/Path/?utm_source=x&b=2&a=1&session=abc#frag",
        "https://xn--caf-dma.example/ünïcode path/%7Euser",
        "https://example.com/" + "x" * 3000,
    ]
    _, entries = parse(urlset(*(url(u.replace("&", "&amp;")) for u in raw)))
    assert locs(entries) == raw


def test_absurdly_long_loc_is_skipped() -> None:
    parser, entries = parse(
        urlset(url("https://example.com/" + "x" * 9000), url("https://example.com/ok"))
    )
    assert locs(entries) == ["https://example.com/ok"] and parser.skipped == 1


# --- metadata (§5.2 items 26-27) -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "parsed"),
    [
        ("2024-01-08", datetime(2024, 1, 8, tzinfo=UTC)),
        ("2024-01-08T00:00:00", datetime(2024, 1, 8, tzinfo=UTC)),
        (
            "2024-01-08T10:30:00+01:00",
            datetime(2024, 1, 8, 10, 30, tzinfo=timezone(timedelta(hours=1))),
        ),
        ("2024-01-08T10:30:00Z", datetime(2024, 1, 8, 10, 30, tzinfo=UTC)),
        ("2024-01-08T10:30Z", datetime(2024, 1, 8, 10, 30, tzinfo=UTC)),
        ("2024-01-08T10:30:00.123456+00:00", datetime(2024, 1, 8, 10, 30, 0, 123456, tzinfo=UTC)),
        ("2016-01-25 15:35:12", datetime(2016, 1, 25, 15, 35, 12, tzinfo=UTC)),
        ("2024-05", datetime(2024, 5, 1, tzinfo=UTC)),
        ("2024", datetime(2024, 1, 1, tzinfo=UTC)),
        ("1969-07-20", datetime(1969, 7, 20, tzinfo=UTC)),
        ("2929-01-01", datetime(2929, 1, 1, tzinfo=UTC)),
        ("Mon, 06 Jan 2025 10:00:00 GMT", datetime(2025, 1, 6, 10, tzinfo=UTC)),
        ("2020-01-01 2020-02-02", None),
        ("Invalid Date", None),
        ("2024-13-45", None),
        ("yesterday", None),
    ],
)
def test_lastmod_keeps_raw_and_parses_leniently(raw: str, parsed: datetime | None) -> None:
    _, entries = parse(urlset(url("https://example.com/a", f"<lastmod> {raw} </lastmod>")))
    assert (entries[0].lastmod, entries[0].lastmod_at) == (raw, parsed)


def test_a_repeated_date_parses_the_same_each_time() -> None:
    """Date-only values are memoised per document: a hit must give what a miss gave."""
    body = urlset(
        *(
            url(f"https://example.com/{i}", f"<lastmod>{raw}</lastmod>")
            for i, raw in enumerate(["2024-01-08", "2024-13-45", "2024-01-08", "2024-13-45"])
        )
    )
    _, entries = parse(body)
    assert [(e.lastmod, e.lastmod_at) for e in entries] == [
        ("2024-01-08", datetime(2024, 1, 8, tzinfo=UTC)),
        ("2024-13-45", None),
    ] * 2


@pytest.mark.parametrize(
    ("changefreq", "priority", "expected"),
    [
        ("daily", "0.5", ("daily", 0.5)),
        (" Weekly ", "1", ("weekly", 1.0)),
        ("NEVER", "1.00", ("never", 1.0)),
        ("sometimes", "0,8", (None, 0.8)),
        ("", "1.5", (None, None)),
        ("hourly", "-0.1", ("hourly", None)),
        ("monthly", "high", ("monthly", None)),
        ("yearly", "nan", ("yearly", None)),
    ],
)
def test_changefreq_and_priority_are_validated(
    changefreq: str, priority: str, expected: tuple[object, object]
) -> None:
    body = urlset(
        url(
            "https://example.com/a",
            f"<changefreq>{changefreq}</changefreq><priority>{priority}</priority>",
        )
    )
    _, entries = parse(body)
    assert (entries[0].changefreq, entries[0].priority) == expected


# --- extensions (§5.2 items 28-29) -------------------------------------------------------------


def test_all_images_of_a_url_are_kept_with_deprecated_fields() -> None:
    images = "".join(
        f"<image:image><image:loc>https://cdn.example.com/{i}.jpg</image:loc>"
        f"<image:caption>Caption {i}</image:caption><image:title>Title {i}</image:title>"
        f"<image:geo_location>Limerick, Ireland</image:geo_location>"
        f"<image:license>https://example.com/license</image:license></image:image>"
        for i in range(1000)
    )
    body = urlset(
        url(
            "https://example.com/gallery",
            images,
            "<image:image><image:loc>/rel.jpg</image:loc></image:image>",
        ),
        attrs=ALL_NS,
    )
    parser, entries = parse(body, 4096)
    assert parser.error is None
    got = entries[0].images
    assert len(got) == 1001
    assert got[7] == {
        "loc": "https://cdn.example.com/7.jpg",
        "caption": "Caption 7",
        "title": "Title 7",
        "geo_location": "Limerick, Ireland",
        "license": "https://example.com/license",
    }
    assert got[-1]["loc"] == "https://example.com/rel.jpg"


def test_videos_are_kept_whole() -> None:
    video = (
        "<video:video>"
        "<video:thumbnail_loc>https://example.com/t/1.jpg</video:thumbnail_loc>"
        "<video:title>Grilling steaks</video:title>"
        "<video:description>Alkis shows you how</video:description>"
        "<video:content_loc>https://example.com/v/1.mp4</video:content_loc>"
        '<video:player_loc allow_embed="yes" autoplay="ap=1">https://example.com/p/1</video:player_loc>'
        "<video:duration>600</video:duration>"
        "<video:expiration_date>2030-11-05T19:20:30+08:00</video:expiration_date>"
        "<video:rating>4.2</video:rating><video:view_count>12345</video:view_count>"
        "<video:publication_date>2007-11-05T19:20:30+08:00</video:publication_date>"
        "<video:family_friendly>yes</video:family_friendly>"
        '<video:restriction relationship="allow">IE GB US CA</video:restriction>'
        '<video:platform relationship="allow">web tv</video:platform>'
        '<video:price currency="EUR" type="rent">1.99</video:price>'
        '<video:price currency="USD" type="own" resolution="HD">9.99</video:price>'
        "<video:requires_subscription>yes</video:requires_subscription>"
        '<video:uploader info="https://example.com/users/grillymcgrillerson">GrillyMcGrillerson</video:uploader>'
        "<video:live>no</video:live><video:tag>steak</video:tag><video:tag>meat</video:tag>"
        "<video:category>Grilling</video:category>"
        '<video:gallery_loc title="Cooking">https://example.com/gallery</video:gallery_loc>'
        "<video:tvshow><video:show_title>Grill</video:show_title><video:season_number>3</video:season_number></video:tvshow>"
        "</video:video>"
    )
    second = "<video:video><video:title>Second</video:title><video:content_loc>/v/2.mp4</video:content_loc></video:video>"
    _, entries = parse(urlset(url("https://example.com/v", video, second), attrs=ALL_NS), 7)
    first, other = entries[0].videos
    assert first == {
        "thumbnail_loc": "https://example.com/t/1.jpg",
        "title": "Grilling steaks",
        "description": "Alkis shows you how",
        "content_loc": "https://example.com/v/1.mp4",
        "player_loc": "https://example.com/p/1",
        "player_loc_allow_embed": "yes",
        "player_loc_autoplay": "ap=1",
        "duration": "600",
        "expiration_date": "2030-11-05T19:20:30+08:00",
        "rating": "4.2",
        "view_count": "12345",
        "publication_date": "2007-11-05T19:20:30+08:00",
        "family_friendly": "yes",
        "restriction": "IE GB US CA",
        "restriction_relationship": "allow",
        "platform": "web tv",
        "platform_relationship": "allow",
        "price": [
            {"value": "1.99", "currency": "EUR", "type": "rent"},
            {"value": "9.99", "currency": "USD", "type": "own", "resolution": "HD"},
        ],
        "requires_subscription": "yes",
        "uploader": "GrillyMcGrillerson",
        "uploader_info": "https://example.com/users/grillymcgrillerson",
        "live": "no",
        "tag": ["steak", "meat"],
        "category": "Grilling",
        "gallery_loc": "https://example.com/gallery",
        "gallery_loc_title": "Cooking",
        "tvshow": {"show_title": "Grill", "season_number": "3"},
    }
    assert other == {"title": "Second", "content_loc": "https://example.com/v/2.mp4"}


def test_news_is_flattened() -> None:
    news = (
        "<news:news><news:publication><news:name>The Example Times</news:name>"
        "<news:language>en</news:language></news:publication>"
        "<news:publication_date>2024-12-29T10:00:00+00:00</news:publication_date>"
        "<news:title>Companies A, B in Merger Talks</news:title>"
        "<news:keywords>business, merger</news:keywords><news:genres>PressRelease, Blog</news:genres>"
        "<news:access>Subscription</news:access><news:stock_tickers>NASDAQ:A, NASDAQ:B</news:stock_tickers>"
        "</news:news>"
    )
    _, entries = parse(urlset(url("https://example.com/n", news), attrs=ALL_NS), 7)
    assert entries[0].news == {
        "publication_name": "The Example Times",
        "publication_language": "en",
        "publication_date": "2024-12-29T10:00:00+00:00",
        "title": "Companies A, B in Merger Talks",
        "keywords": "business, merger",
        "genres": "PressRelease, Blog",
        "access": "Subscription",
        "stock_tickers": "NASDAQ:A, NASDAQ:B",
    }


def test_hreflang_alternates_include_x_default() -> None:
    links = (
        '<xhtml:link rel="alternate" hreflang="en" href="https://example.com/en/"/>'
        '<xhtml:link rel="alternate" hreflang="de-CH" href="/de-ch/"/>'
        '<xhtml:link rel="Alternate" hreflang="x-default" href="https://example.com/"/>'
        '<xhtml:link rel="canonical" href="https://example.com/canonical"/>'
        '<xhtml:link rel="alternate" hreflang="fr"/>'
    )
    _, entries = parse(urlset(url("https://example.com/en/", links), attrs=ALL_NS), 7)
    assert entries[0].alternates == (
        {"hreflang": "en", "href": "https://example.com/en/"},
        {"hreflang": "de-CH", "href": "https://example.com/de-ch/"},
        {"hreflang": "x-default", "href": "https://example.com/"},
    )


@pytest.mark.parametrize(
    ("image_ns", "xhtml_ns"),
    [
        ("https://www.google.com/schemas/sitemap-image/1.1", "https://www.w3.org/1999/xhtml"),
        ("http://www.google.com/schemas/sitemap-image/1.0", XHTML_NS),
        ("http://www.sitemaps.org/schemas/sitemap-image/1.1", "http://www.w3.org/1999/xhtml/"),
    ],
)
def test_extension_namespace_variants(image_ns: str, xhtml_ns: str) -> None:
    body = urlset(
        url(
            "https://example.com/a",
            "<image:image><image:loc>https://example.com/i.jpg</image:loc></image:image>",
            '<xhtml:link rel="alternate" hreflang="en" href="https://example.com/a"/>',
        ),
        attrs=f'xmlns="{NS}" xmlns:image="{image_ns}" xmlns:xhtml="{xhtml_ns}"',
    )
    _, entries = parse(body)
    assert [i["loc"] for i in entries[0].images] == ["https://example.com/i.jpg"]
    assert entries[0].alternates == ({"hreflang": "en", "href": "https://example.com/a"},)


def test_extension_loc_never_replaces_the_page_loc_and_other_namespaces_are_ignored() -> None:
    body = urlset(
        "<url><image:loc>https://example.com/stray.jpg</image:loc><loc>https://example.com/page</loc>"
        '<mobile:mobile/><PageMap xmlns="http://www.google.com/schemas/sitemap-pagemap/1.0">'
        '<DataObject type="doc"><Attribute name="loc">https://example.com/pagemap</Attribute></DataObject></PageMap>'
        "<geo:geo><geo:format>kml</geo:format></geo:geo></url>",
        attrs=f'{ALL_NS} xmlns:mobile="http://www.google.com/schemas/sitemap-mobile/1.0" xmlns:geo="http://www.google.com/geo/schemas/sitemap/1.0"',
    )
    parser, entries = parse(body, 7)
    assert parser.error is None
    assert entries == [SitemapUrl("https://example.com/page")]


def test_extensions_without_prefix_declaration_in_default_namespace() -> None:
    """Generators that forget the prefix put <image> in the sitemap namespace."""
    body = urlset(
        url("https://example.com/a", "<image><loc>https://example.com/i.jpg</loc></image>")
    )
    _, entries = parse(body)
    assert entries[0].loc == "https://example.com/a"
    assert entries[0].images[0]["loc"] == "https://example.com/i.jpg"


# --- other kinds (§5.2 items 30, 35) -----------------------------------------------------------


def test_empty_news_sitemap_is_valid() -> None:
    parser, entries = parse(urlset(attrs=f'xmlns="{NS}" xmlns:news="{NEWS_NS}"'), 7)
    assert (parser.kind, parser.error, entries, parser.truncated) == ("urlset", None, [], False)


def test_sitemap_index() -> None:
    body = (
        f'<?xml version="1.0"?><sitemapindex xmlns="{NS}">'
        "<sitemap><loc>https://example.com/s1.xml.gz</loc><lastmod>2024-01-08T10:00:00+00:00</lastmod></sitemap>"
        "<sitemap><loc> /s2.xml?from=1&amp;to=2 </loc></sitemap>"
        "<sitemap><lastmod>2024-01-01</lastmod></sitemap>"
        "</sitemapindex>"
    ).encode()
    parser, entries = parse(body, 7)
    assert parser.kind == "index" and parser.error is None and parser.skipped == 1
    assert entries == [
        ChildSitemap(
            "https://example.com/s1.xml.gz",
            "2024-01-08T10:00:00+00:00",
            datetime(2024, 1, 8, 10, tzinfo=UTC),
        ),
        ChildSitemap("https://example.com/s2.xml?from=1&to=2", raw_loc="/s2.xml?from=1&to=2"),
    ]


def test_prefixed_sitemap_index() -> None:
    body = f'<sm:sitemapindex xmlns:sm="{NS}"><sm:sitemap><sm:loc>https://example.com/s.xml</sm:loc></sm:sitemap></sm:sitemapindex>'
    parser, entries = parse(body.encode(), 7)
    assert parser.kind == "index" and locs(entries) == ["https://example.com/s.xml"]


def test_plain_text_sitemap() -> None:
    body = (
        codecs.BOM_UTF8
        + b"https://example.com/a\r\n\r\n# a comment\r\n  https://example.com/b?x=1&y=2  \r"
        b"not a url\nftp://example.com/f\nhttps://example.com/c d\n\tHTTP://EXAMPLE.COM/UP\n"
        b"https://example.com/\xff\xfe\n"
        + b"https://example.com/"
        + b"x" * 10_000
        + b"\nhttps://example.com/last"
    )
    parser, entries = parse(body, 7)
    assert parser.kind == "text" and parser.error is None
    assert locs(entries) == [
        "https://example.com/a",
        "https://example.com/b?x=1&y=2",
        "HTTP://EXAMPLE.COM/UP",
        "https://example.com/ÿþ",  # not UTF-8: read as windows-1252, never U+FFFD
        "https://example.com/last",
    ]


def test_plain_text_utf16() -> None:
    parser, entries = parse("https://example.com/ä\nhttps://example.com/b\n".encode("utf-16"), 3)
    assert parser.kind == "text" and locs(entries) == [
        "https://example.com/ä",
        "https://example.com/b",
    ]


def test_text_without_urls_is_an_error() -> None:
    parser, entries = parse(b"Service Unavailable\n")
    assert (parser.kind, entries, parser.error) == (
        "text",
        [],
        "no URLs found in the plain-text body",
    )


def test_rss_feed() -> None:
    body = b"""<?xml version="1.0"?>
<rss version="2.0" xmlns:atom="http://www.w3.org/2005/Atom"><channel>
<title>Example</title><link>https://example.com/</link>
<image><url>https://example.com/logo.png</url></image>
<item><title>A</title><link>https://example.com/a</link><pubDate>Mon, 06 Jan 2025 10:00:00 GMT</pubDate></item>
<item><guid isPermaLink="true">https://example.com/b</guid></item>
<item><guid>https://example.com/c</guid></item>
<item><guid isPermaLink="false">https://example.com/not-a-page</guid></item>
<item><guid>tag:example.com,2025:1</guid></item>
<item><atom:link href="https://example.com/d"/></item>
</channel></rss>"""
    parser, entries = parse(body, 7)
    assert parser.kind == "rss" and parser.error is None
    assert locs(entries) == [
        "https://example.com/a",
        "https://example.com/b",
        "https://example.com/c",
        "https://example.com/d",
    ]
    assert entries[0].lastmod_at == datetime(2025, 1, 6, 10, tzinfo=UTC)
    assert parser.skipped == 2


def test_rss_1_rdf_feed() -> None:
    body = b"""<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" xmlns="http://purl.org/rss/1.0/">
<channel rdf:about="https://example.com/"><title>x</title></channel>
<item rdf:about="https://example.com/a"><title>A</title><link>https://example.com/a</link></item>
<item rdf:about="https://example.com/b"><title>B</title></item></rdf:RDF>"""
    parser, entries = parse(body, 7)
    assert parser.kind == "rss" and locs(entries) == [
        "https://example.com/a",
        "https://example.com/b",
    ]


def test_atom_feed() -> None:
    body = b"""<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom"><title>Example</title><link href="https://example.com/"/>
<entry><title>A</title><link rel="self" href="https://example.com/a.atom"/><link rel="alternate" href="https://example.com/a"/>
<updated>2025-01-02T03:04:05Z</updated><published>2024-01-01T00:00:00Z</published></entry>
<entry><link href="/b"/><published>2024-06-01T00:00:00Z</published></entry>
<entry><link rel="enclosure" href="https://example.com/c.mp3"/></entry>
</feed>"""
    parser, entries = parse(body, 7)
    assert parser.kind == "atom" and parser.error is None
    assert [(e.loc, e.lastmod) for e in entries] == [
        ("https://example.com/a", "2025-01-02T03:04:05Z"),
        ("https://example.com/b", "2024-06-01T00:00:00Z"),
    ]
    assert entries[1].raw_loc == "/b" and parser.skipped == 1


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"", "empty body"),
        (b"   \n ", "empty body"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary content, not a sitemap"),
        (
            b"<?xml version='1.0'?><Error><Code>NoSuchKey</Code></Error>",
            "unexpected root element <Error>, not a sitemap",
        ),
        (b"<?xml version='1.0'?>\nhello", "text after the XML prolog, no root element"),
        (
            b"<?xml version='1.0'?><!-- never closed",
            "no root element found at the start of the document",
        ),
    ],
)
def test_not_a_sitemap(body: bytes, error: str) -> None:
    parser, entries = parse(body, 3)
    assert (parser.kind, parser.error, entries) == ("unknown", error, [])


def test_entries_are_slotted_dataclasses() -> None:
    entry = SitemapUrl("https://example.com/a")
    with pytest.raises(AttributeError):
        entry.unknown = 1  # type: ignore[attr-defined]
    assert entry.images == () and entry.news is None and entry.alternates == ()
    assert IMAGE_NS and VIDEO_NS  # namespaces the fixtures declare in ALL_NS
