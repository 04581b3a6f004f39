"""sitemaps_from_robots against the robots.txt quirks of sitemaps.md §5.2 item 33."""

from __future__ import annotations

import codecs
import gzip

import pytest

from worker.scan import WELL_KNOWN_PATHS, sitemaps_from_robots
from worker.scan.robots import MAX_ROBOTS_BYTES, read_robots

ROBOTS = "https://example.com/robots.txt"


def test_sitemap_lines_any_case_and_spelling() -> None:
    body = (
        b"User-agent: *\nDisallow: /admin\n"
        b"Sitemap: https://example.com/a.xml\n"
        b"SITEMAP: https://example.com/b.xml\n"
        b"sitemap:https://example.com/c.xml\n"
        b"Site-map: https://example.com/d.xml\n"
        b"  \tSitemap :  https://example.com/e.xml  \n"
        b"Disallow: /sitemap: not-a-directive\n"
    )
    assert sitemaps_from_robots(body, ROBOTS) == [f"https://example.com/{c}.xml" for c in "abcde"]


def test_relative_and_scheme_less_values_are_resolved() -> None:
    body = (
        b"Sitemap: /sitemap.ashx\n"  # scrapy#2390 (asos.com)
        b"Sitemap: sitemaps/index.xml\n"
        b"Sitemap: //cdn.example.net/sitemap.xml\n"
        b"Sitemap: worldairops.com/sitemap.xml\n"  # squirrelscan#393
        b"Sitemap: www.example.org:8080/s.xml\n"
    )
    assert sitemaps_from_robots(body, "http://example.com/robots.txt") == [
        "http://example.com/sitemap.ashx",
        "http://example.com/sitemaps/index.xml",
        "http://cdn.example.net/sitemap.xml",
        "http://worldairops.com/sitemap.xml",
        "http://www.example.org:8080/s.xml",
    ]


def test_comments_are_stripped() -> None:
    body = (
        b"# Sitemap: https://example.com/commented-out.xml\n"
        b"Sitemap: https://example.com/a.xml # the main one\n"
        b"Sitemap: https://example.com/b.xml#no-space\n"
        b"Sitemap: # nothing here\n"
    )
    assert sitemaps_from_robots(body, ROBOTS) == [
        "https://example.com/a.xml",
        "https://example.com/b.xml",
    ]


@pytest.mark.parametrize("newline", [b"\r\n", b"\r", b"\n"])
def test_bom_and_line_endings(newline: bytes) -> None:
    body = codecs.BOM_UTF8 + newline.join(
        [
            b"Sitemap: https://example.com/a.xml",
            b"User-agent: *",
            b"Sitemap: https://example.com/b.xml",
        ]
    )
    assert sitemaps_from_robots(body, ROBOTS) == [
        "https://example.com/a.xml",
        "https://example.com/b.xml",
    ]


def test_gzip_compressed_body() -> None:
    body = gzip.compress(b"User-agent: *\nSitemap: https://example.com/a.xml\n")
    assert sitemaps_from_robots(body, ROBOTS) == ["https://example.com/a.xml"]


def test_corrupt_gzip_body_gives_nothing() -> None:
    assert sitemaps_from_robots(b"\x1f\x8b\x08\x00garbage", ROBOTS) == []


def test_duplicates_removed_in_order() -> None:
    body = (
        b"Sitemap: https://example.com/b.xml\nSitemap: https://example.com/a.xml\n"
        b"sitemap: https://example.com/b.xml\nSitemap: /a.xml\n"
    )
    assert sitemaps_from_robots(body, ROBOTS) == [
        "https://example.com/b.xml",
        "https://example.com/a.xml",
    ]


def test_invalid_bytes_are_tolerated() -> None:
    body = b"User-agent: \xff\xfe*\nDisallow: /caf\xe9\nSitemap: https://example.com/s\xc3\xa9.xml\nSitemap: https://example.com/\xff.xml\n"
    assert sitemaps_from_robots(body, ROBOTS) == [
        "https://example.com/sé.xml",
        "https://example.com/\ufffd.xml",
    ]


def test_non_http_values_and_html_bodies_give_nothing() -> None:
    body = b"Sitemap: ftp://example.com/s.xml\nSitemap: javascript:alert(1)\nSitemap: mailto:x@example.com\n"
    assert sitemaps_from_robots(body, ROBOTS) == []
    assert sitemaps_from_robots(b"<html><body>Sitemap: nope</body></html>", ROBOTS) == []
    assert sitemaps_from_robots(b"", ROBOTS) == []


def test_only_the_first_512_kib_are_read() -> None:
    filler = b"Disallow: /" + b"x" * 100 + b"\n"
    body = (
        b"Sitemap: https://example.com/early.xml\n"
        + filler * 6000
        + b"Sitemap: https://example.com/late.xml\n"
    )
    assert sitemaps_from_robots(body, ROBOTS) == ["https://example.com/early.xml"]


def test_a_line_cut_by_the_cap_is_not_read() -> None:
    """The cap falls inside a Sitemap: line: the part before it would name another URL."""
    head = b"Sitemap: https://example.com/early.xml\n"
    body = head + b"#" * (MAX_ROBOTS_BYTES - len(head) - 20) + b"\n"
    body += b"Sitemap: https://example.com/cut-by-the-cap-somewhere-in-here.xml\n"
    assert read_robots(body, ROBOTS) == (["https://example.com/early.xml"], True)
    assert read_robots(body[:MAX_ROBOTS_BYTES], ROBOTS, cut=True).sitemaps == [
        "https://example.com/early.xml"
    ]


def test_a_body_said_to_be_cut_keeps_only_complete_lines() -> None:
    body = b"Sitemap: https://example.com/a.xml\r\nSitemap: https://example.com/b.x"
    assert read_robots(body, ROBOTS, cut=True) == (["https://example.com/a.xml"], True)
    assert read_robots(body, ROBOTS) == (
        ["https://example.com/a.xml", "https://example.com/b.x"],
        False,
    )


def test_gzip_that_unpacks_past_the_cap_is_cut_at_a_line() -> None:
    text = b"Sitemap: https://example.com/a.xml\n" + b"Disallow: /x\n" * 60_000
    body = gzip.compress(text + b"Sitemap: https://example.com/late.xml\n")
    assert len(text) > MAX_ROBOTS_BYTES
    assert read_robots(body, ROBOTS) == (["https://example.com/a.xml"], True)
    assert read_robots(gzip.compress(text[:1000]), ROBOTS).cut is False


def test_a_value_holding_a_nul_is_dropped() -> None:
    body = b"Sitemap: https://example.com/a\x00b.xml\nSitemap: https://example.com/ok.xml\n"
    assert sitemaps_from_robots(body, ROBOTS) == ["https://example.com/ok.xml"]


def test_well_known_paths() -> None:
    assert WELL_KNOWN_PATHS[0] == "/sitemap.xml"
    assert {
        "/sitemap_index.xml",
        "/sitemap-index.xml",
        "/wp-sitemap.xml",
        "/sitemap.xml.gz",
        "/sitemap_news.xml",
    } <= set(WELL_KNOWN_PATHS)
    assert len(set(WELL_KNOWN_PATHS)) == len(WELL_KNOWN_PATHS)
    assert all(path.startswith("/") and " " not in path for path in WELL_KNOWN_PATHS)
