"""The text format's cached timestamp reads exactly as logging's own, across seconds."""

from __future__ import annotations

import logging

from worker.logs import TextFormatter


def stamped(created: float) -> logging.LogRecord:
    rec = logging.LogRecord("worker.engine", logging.INFO, __file__, 1, "m", None, None)
    rec.created = created
    rec.msecs = (created - int(created)) * 1000
    return rec


def test_cached_time_matches_the_standard_one_within_and_across_seconds():
    ours, standard = TextFormatter(), logging.Formatter()
    base = 1_796_000_000.0
    for created in (
        base + 0.001,
        base + 0.5,
        base + 0.999,
        base + 1.0,
        base + 1.25,
        base + 86_400.7,
    ):
        rec = stamped(created)
        assert ours.formatTime(rec) == standard.formatTime(rec)


def test_an_explicit_date_format_is_honoured():
    rec = stamped(1_796_000_000.25)
    assert TextFormatter().formatTime(rec, "%Y") == logging.Formatter().formatTime(rec, "%Y")
