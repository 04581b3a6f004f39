"""The named-query file parses, and every query name the code asks for exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from worker.sql import migrations, parse_queries, queries

WORKER = Path(__file__).resolve().parents[2] / "worker"


def test_every_query_used_in_code_is_defined():
    used = set()
    for path in WORKER.rglob("*.py"):
        used |= set(re.findall(r"""\bq\(\s*["'](\w+)["']""", path.read_text()))
    assert used, "expected the code to ask for named queries"
    missing = used - set(queries())
    assert not missing, f"queries used but not in sql/queries.sql: {sorted(missing)}"


def test_every_defined_query_is_used():
    text = "\n".join(p.read_text() for p in WORKER.rglob("*.py"))
    unused = [name for name in queries() if f'"{name}"' not in text]
    assert not unused, f"dead queries in sql/queries.sql: {unused}"


def test_parse_keeps_kind_and_body_and_rejects_duplicates():
    parsed = parse_queries("-- name: a :one\nSELECT 1;\n-- a comment\n-- name: b :many\nSELECT 2")
    assert parsed["a"].kind == "one" and parsed["a"].text == "SELECT 1;\n-- a comment"
    assert parsed["b"].text == "SELECT 2"
    with pytest.raises(ValueError, match="defined twice"):
        parse_queries("-- name: a :one\nSELECT 1\n-- name: a :one\nSELECT 2")


def test_migrations_are_ordered_and_numbered():
    versions = [v for v, _ in migrations()]
    assert versions == sorted(versions) and versions[0].startswith("0001_")
    assert all(re.fullmatch(r"\d{4}_\w+", v) for v in versions)


def test_schema_comments_every_status():
    text = dict(migrations())["0001_jobs"]
    for status in ("pending", "processing", "completed", "failed", "cancelled"):
        assert re.search(rf"--\s+{status}\s+:", text), f"status {status} has no comment"
