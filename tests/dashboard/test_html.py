"""The escaping every page relies on, and the login redirect that must stay on this site."""

from __future__ import annotations

import pytest

from worker.dashboard.html import Safe, esc, fill, join, tag
from worker.dashboard.login import safe_next


def test_values_are_escaped_unless_safe():
    hostile = '"><script>alert(1)</script>&'
    assert fill("<p title={v}>{v}</p>", v=hostile) == (
        "<p title=&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;&amp;>"
        "&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;&amp;</p>"
    )
    assert fill("{v}", v=Safe("<b>ok</b>")) == "<b>ok</b>"
    assert fill("{n:,}", n=1234567) == "1,234,567"
    assert esc(None) == ""
    assert join(["<", Safe("<i>")]) == "&lt;<i>"


def test_tag_attributes():
    assert tag("a", "x<", href="/j?a=1&b=2", class_="c", hidden=True, title=None, off=False) == (
        '<a href="/j?a=1&amp;b=2" class="c" hidden>x&lt;</a>'
    )
    assert tag("td", "", aria_current="page") == '<td aria-current="page"></td>'


@pytest.mark.parametrize(
    "given, expected",
    [
        ("/jobs/5", "/jobs/5"),
        ("/jobs?status=failed", "/jobs?status=failed"),
        ("//evil.example/x", "/"),
        ("/\\evil.example", "/"),
        ("https://evil.example/", "/"),
        ("jobs", "/"),
        ("/a\r\nSet-Cookie: x=1", "/"),
        ("", "/"),
        (None, "/"),
    ],
)
def test_login_returns_only_to_a_path_on_this_site(given, expected):
    assert safe_next(given) == expected
