"""A domain's `rescan_interval` as people write it: seconds (`3600`), ISO 8601 (`PT1H`,
`P1D`, `P1W`), or words (`1 day`, `90 minutes`, `1h 30m`). Months and years are refused:
they have no fixed length, and "every month" is easier to reason about as `30 days`. The
bounds are the table's (at least a minute) and ten years at most (as the CLI's), so
`now() + interval` can never leave PostgreSQL's timestamp range."""

from __future__ import annotations

import re
from datetime import timedelta

MIN_SECONDS = 60
MAX_SECONDS = 3650 * 86400  # as `sitemap-worker domains watch --every` allows
MAX_TEXT = 100
_SHAPES = "must be seconds, a duration such as '1 day' or 'PT1H', or null"

_UNITS = {
    "s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1,
    "m": 60, "min": 60, "mins": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hr": 3600, "hrs": 3600, "hour": 3600, "hours": 3600,
    "d": 86400, "day": 86400, "days": 86400,
    "w": 604800, "week": 604800, "weeks": 604800,
}  # fmt: skip
_WORDS = re.compile(r"\s*(\d+)\s*([a-z]+)\s*,?")
_ISO = re.compile(r"P(?:(\d+)W)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?")


def parse_interval(value: object) -> int | None:
    """Seconds, or None for null (stop watching); ValueError says what is wrong."""
    if value is None:
        return None
    # ValueError, not TypeError: pydantic turns only ValueError into a 422 detail.
    if isinstance(value, bool):  # a bool is an int to Python, never an interval to anyone
        raise ValueError(_SHAPES)  # noqa: TRY004
    if isinstance(value, int):
        return _bounded(value)
    if not isinstance(value, str):
        raise ValueError(_SHAPES)  # noqa: TRY004
    text = value.strip()
    if not text or len(text) > MAX_TEXT:
        raise ValueError(f"must be 1 to {MAX_TEXT} characters, such as '1 day' or 'PT1H'")
    if text.isascii() and text.isdigit():
        return _bounded(int(text))
    seconds = _iso(text.upper()) if text[:1] in "Pp" else _words(text.lower())
    if seconds is None:
        raise ValueError(
            f"{text[:40]!r} is not a duration: use seconds, '1 day', '90 minutes' or 'PT1H' "
            "(months and years have no fixed length: say '30 days')"
        )
    return _bounded(seconds)


def _iso(text: str) -> int | None:
    match = _ISO.fullmatch(text)
    if match is None or not any(match.groups()) or text.endswith("T"):
        return None
    weeks, days, hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    return (((weeks * 7 + days) * 24 + hours) * 60 + minutes) * 60 + seconds


def _words(text: str) -> int | None:
    total, at = 0, 0
    while at < len(text):
        match = _WORDS.match(text, at)
        if match is None or match.end() == at or match.group(2) not in _UNITS:
            return None
        total += int(match.group(1)) * _UNITS[match.group(2)]
        at = match.end()
    return total if at else None


def _bounded(seconds: int) -> int:
    if seconds < MIN_SECONDS:
        raise ValueError(f"must be at least 1 minute ({MIN_SECONDS} seconds), not {seconds} s")
    if seconds > MAX_SECONDS:
        raise ValueError(f"must be at most 3650 days ({MAX_SECONDS} seconds)")
    return seconds


def iso_duration(span: timedelta | None) -> str | None:
    """`PT1H`, `P1D`, `P1DT12H`: how an interval is shown (what the PUT accepts back)."""
    if span is None:
        return None
    seconds = int(span.total_seconds())
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    time = "".join(f"{n}{u}" for n, u in ((hours, "H"), (minutes, "M"), (secs, "S")) if n)
    return "P" + (f"{days}D" if days else "") + (f"T{time}" if time else "" if days else "T0S")
