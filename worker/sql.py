"""Named SQL from `sql/queries.sql` (the job path) and `sql/queries/*.sql` (one file per area:
the HTTP API, domains, ...), and the ordered migrations in `sql/migrations/`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

_HEADER = re.compile(r"^--\s*name:\s*(\w+)\s+:(one|many|val|exec)\s*$", re.MULTILINE)
_ANY_HEADER = re.compile(r"^--\s*name:.*$", re.MULTILINE)

# The asyncpg method each kind is run with; tests/unit/test_sql.py checks every call site.
METHODS = {"one": "fetchrow", "many": "fetch", "val": "fetchval", "exec": "execute"}


@dataclass(frozen=True, slots=True)
class Query:
    name: str
    kind: str  # one | many | val | exec: run with fetchrow | fetch | fetchval | execute
    text: str


def sql_dir() -> Path:
    """`worker/sql` in an installed wheel, the repository's top-level `sql/` otherwise."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "sql", here.parent / "sql"):
        if (candidate / "queries.sql").is_file():
            return candidate
    raise FileNotFoundError("sql/queries.sql not found next to the worker package")


def parse_queries(text: str) -> dict[str, Query]:
    """Split a file of `-- name: x :kind` blocks; comment lines inside a block are kept.

    A header with a misspelt kind is refused: otherwise it would read as a comment and
    its statement would silently join the query above it."""
    for line in _ANY_HEADER.findall(text):
        if not _HEADER.fullmatch(line):
            raise ValueError(
                f"bad query header {line!r}: expected '-- name: <name> :{'|'.join(METHODS)}'"
            )
    queries: dict[str, Query] = {}
    headers = list(_HEADER.finditer(text))
    for header, following in zip(headers, [*headers[1:], None], strict=True):
        body = text[header.end() : following.start() if following else len(text)].strip()
        name, kind = header.group(1), header.group(2)
        if name in queries:
            raise ValueError(f"query {name!r} is defined twice")
        queries[name] = Query(name, kind, body)
    return queries


def query_files() -> list[Path]:
    """`queries.sql` first, then each area's file in name order."""
    folder = sql_dir()
    return [folder / "queries.sql", *sorted((folder / "queries").glob("*.sql"))]


@cache
def queries() -> dict[str, Query]:
    return load_queries(query_files())


def load_queries(paths: list[Path]) -> dict[str, Query]:
    """Every named query; a name defined in two files is refused like one defined twice."""
    merged: dict[str, Query] = {}
    for path in paths:
        for name, query in parse_queries(path.read_text(encoding="utf-8")).items():
            if name in merged:
                raise ValueError(f"query {name!r} is defined twice ({path.name} and another)")
            merged[name] = query
    return merged


def q(name: str) -> str:
    """The text of a named query; a typo fails loudly at the first call."""
    return queries()[name].text


def migrations() -> list[tuple[str, str]]:
    """(version, sql) pairs in the order they must be applied: the files' name order."""
    folder = sql_dir() / "migrations"
    return [(p.stem, p.read_text(encoding="utf-8")) for p in sorted(folder.glob("*.sql"))]
