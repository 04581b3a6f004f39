"""How a URL's values are made storable before they reach PostgreSQL (no database here)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from worker.jobs.sitemap.store import _clean, _json
from worker.scan.model import SitemapUrl


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        ([{"title": "C:\\u0000 path"}], [{"title": "C:\\u0000 path"}]),  # the text, not a NUL: kept
        ([{"title": "a\x00b"}], [{"title": "ab"}]),  # a NUL: jsonb cannot hold it
        ([{"title": "\\\x00"}], [{"title": "\\"}]),  # a backslash, then a NUL
        ([{"title": "\\\\u0000"}], [{"title": "\\\\u0000"}]),
        ({"t": "\x00\x00x\x00"}, {"t": "x"}),
    ],
)
def test_json_drops_nul_characters_and_only_them(value, stored):
    text = _json(value)
    assert text is not None and json.loads(text) == stored


def test_json_of_nothing_is_null():
    assert _json(()) is None and _json(None) is None


def test_clean_makes_a_chunk_storable_and_says_whether_it_changed():
    early = datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14)))  # before year 1 in UTC
    ok = datetime(2024, 1, 2, tzinfo=UTC)
    bad = SitemapUrl(
        "https://example.com/\udcff",
        lastmod="0001-01-01T00:00:00+14:00",
        lastmod_at=early,
        images=({"title": "x\udce9"},),
        news={"title": "\ud800"},
    )
    good = SitemapUrl("https://example.com/a", lastmod="2024-01-02", lastmod_at=ok)
    assert _clean([bad, good])
    assert bad.loc == "https://example.com/\ufffd" and bad.lastmod_at is None
    assert bad.lastmod == "0001-01-01T00:00:00+14:00"  # the text as published stays
    assert bad.images == ({"title": "x\ufffd"},) and bad.news == {"title": "\ufffd\ufffd\ufffd"}
    assert good.lastmod_at == ok
    assert not _clean([good])
