"""rescan_interval as people write it (worker/api/intervals.py): pure parsing, no database."""

from __future__ import annotations

from datetime import timedelta

import pytest

from worker.api.intervals import iso_duration, parse_interval


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (None, None),
        (60, 60),
        ("3600", 3600),
        ("1 day", 86400),
        ("1 DAY", 86400),
        ("90 minutes", 5400),
        ("1h 30m", 5400),
        ("1 hour, 30 minutes", 5400),
        ("2 weeks", 14 * 86400),
        ("PT1H", 3600),
        ("pt1m", 60),
        ("P1D", 86400),
        ("P1DT12H", 129600),
        ("P1W", 604800),
        (" 1 day ", 86400),
    ],
)
def test_accepted_spellings(value: object, seconds: int | None) -> None:
    assert parse_interval(value) == seconds


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (59, "at least 1 minute"),
        ("PT59S", "at least 1 minute"),
        (0, "at least 1 minute"),
        (-3600, "at least 1 minute"),
        ("3651 days", "at most 3650 days"),
        ("99999999999999999999999 days", "at most 3650 days"),
        ("1 month", "not a duration"),
        ("P1M", "months and years"),  # ISO 8601: M before T is months
        ("P1Y", "not a duration"),
        ("P", "not a duration"),
        ("PT", "not a duration"),
        ("P1DT", "not a duration"),
        ("day", "not a duration"),
        ("1", "at least 1 minute"),
        ("", "1 to 100 characters"),
        ("1 day" * 30, "1 to 100 characters"),
        ("١٢٠", "not a duration"),  # non-ASCII digits
        (True, "must be seconds"),
        (1.5, "must be seconds"),
        ([60], "must be seconds"),
    ],
)
def test_refused_values_say_why(value: object, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        parse_interval(value)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(60, "PT1M"), (3600, "PT1H"), (86400, "P1D"), (129600, "P1DT12H"), (90061, "P1DT1H1M1S")],
)
def test_iso_duration_round_trips(seconds: int, text: str) -> None:
    assert iso_duration(timedelta(seconds=seconds)) == text
    assert parse_interval(text) == seconds
