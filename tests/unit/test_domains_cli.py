"""`sitemap-worker domains` arguments: intervals and domains are checked before any database."""

from __future__ import annotations

import argparse
from datetime import timedelta

import pytest

from worker.cli_args import build_parser
from worker.cli_domains import rescan_interval


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30m", timedelta(minutes=30)),
        ("12h", timedelta(hours=12)),
        ("1d", timedelta(days=1)),
        ("2w", timedelta(weeks=2)),
        ("1 day", timedelta(days=1)),
        ("6 hours", timedelta(hours=6)),
        ("90 minutes", timedelta(minutes=90)),
        ("1.5h", timedelta(minutes=90)),
    ],
)
def test_intervals_people_write(text, expected):
    assert rescan_interval(text) == expected


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "not an interval"),
        ("soon", "not an interval"),
        ("5 fortnights", "not an interval"),
        ("30s", "not an interval"),
        ("0m", "from 1 minute"),
        ("5000d", "from 1 minute"),
    ],
)
def test_bad_intervals_say_what_is_wrong(text, says):
    with pytest.raises(argparse.ArgumentTypeError, match=says):
        rescan_interval(text)


def test_watch_needs_every_or_never_and_a_usable_domain(capsys):
    parser = build_parser()
    args = parser.parse_args(["domains", "watch", "example.com", "--every", "1 day"])
    assert args.every == timedelta(days=1) and not args.never
    for argv in (
        ["domains", "watch", "example.com"],
        ["domains", "watch", "example.com", "--every", "1d", "--never"],
        ["domains", "watch", "ftp://example.com", "--never"],
    ):
        with pytest.raises(SystemExit) as exc:
            parser.parse_args(argv)
        assert exc.value.code == 2
    assert "ftp" in capsys.readouterr().err
    assert parser.parse_args(["domains"]).domains_command is None  # lists
