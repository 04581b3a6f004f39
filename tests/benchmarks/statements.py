"""Named statements of bench.sql, next to this file: the benchmarks' own SQL stays out of
the worker package (and its wheel)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from worker.sql import Query, parse_queries


@cache
def _statements() -> dict[str, Query]:
    return parse_queries((Path(__file__).with_name("bench.sql")).read_text(encoding="utf-8"))


def bq(name: str) -> str:
    """A named statement from bench.sql; a typo fails loudly at the first call."""
    return _statements()[name].text
