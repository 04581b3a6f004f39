"""The named-query file parses, and every query name the code asks for exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from worker.sql import METHODS, load_queries, migrations, parse_queries, queries, sql_dir

WORKER = Path(__file__).resolve().parents[2] / "worker"


def test_every_query_used_in_code_is_defined():
    used = set()
    for path in WORKER.rglob("*.py"):
        used |= set(re.findall(r"""\bq\(\s*["'](\w+)["']""", path.read_text()))
    assert used, "expected the code to ask for named queries"
    missing = used - set(queries())
    assert not missing, f"queries used but in no query file: {sorted(missing)}"


def test_every_defined_query_is_used():
    text = "\n".join(p.read_text() for p in WORKER.rglob("*.py"))
    unused = [name for name in queries() if f'"{name}"' not in text]
    assert not unused, f"dead queries in the query files: {unused}"


# `conn.fetchval(q("name")` (a line break after the parenthesis allowed), and the helpers
# that run a name given to them with one fixed method.
_DIRECT = re.compile(r"""\.(execute|fetch|fetchrow|fetchval)\(\s*q\(\s*["'](\w+)["']""")
_HELPERS = {"_query": "fetch"}  # worker/endpoint.py: conn.fetch(q(name))
_VIA_HELPER = re.compile(rf"""\b({"|".join(_HELPERS)})\(\s*["'](\w+)["']""")


def call_sites(text: str) -> list[tuple[str, str]]:
    """(method, query name) for every named query the code runs; a `q("name")` whose method
    this cannot see is reported with method '?', so no call site escapes the check."""
    sites = [(m.group(1), m.group(2)) for m in _DIRECT.finditer(text)]
    sites += [(_HELPERS[m.group(1)], m.group(2)) for m in _VIA_HELPER.finditer(text)]
    direct_spans = {m.start(2) for m in _DIRECT.finditer(text)}
    for m in re.finditer(r"""\bq\(\s*["'](\w+)["']""", text):
        if m.start(1) not in direct_spans:
            sites.append(("?", m.group(1)))
    return sites


def test_every_call_site_runs_its_query_with_the_method_of_its_kind():
    """The `:one/:many/:val/:exec` headers are a contract, not decoration: a `:val` query
    run with fetch (or a `:many` with fetchval) would take a different shape of answer."""
    sites = {
        (path.relative_to(WORKER.parent), method, name)
        for path in WORKER.rglob("*.py")
        for method, name in call_sites(path.read_text())
    }
    assert len(sites) > 20, sites
    kinds = queries()
    wrong = sorted(
        f"{path}: {method}({name}) but {name} is :{kinds[name].kind}"
        for path, method, name in sites
        if name in kinds and method != METHODS[kinds[name].kind]
    )
    assert not wrong, "call sites that do not match their query's kind:\n" + "\n".join(wrong)


def test_call_sites_are_found_in_every_form():
    text = """await conn.fetchval(q("a"), 1)\nawait conn.execute(\n    q('b'), x)\n
              rows = await self._query("c")\nsql = q("d")\n"""
    assert sorted(call_sites(text)) == [
        ("?", "d"),
        ("execute", "b"),
        ("fetch", "c"),
        ("fetchval", "a"),
    ]


def test_a_header_with_a_misspelt_kind_is_refused():
    with pytest.raises(ValueError, match="bad query header"):
        parse_queries("-- name: a :one\nSELECT 1\n-- name: b :vals\nSELECT 2")
    parse_queries((sql_dir() / "queries.sql").read_text())  # the real file passes


def test_parse_keeps_kind_and_body_and_rejects_duplicates():
    parsed = parse_queries("-- name: a :one\nSELECT 1;\n-- a comment\n-- name: b :many\nSELECT 2")
    assert parsed["a"].kind == "one" and parsed["a"].text == "SELECT 1;\n-- a comment"
    assert parsed["b"].text == "SELECT 2"
    with pytest.raises(ValueError, match="defined twice"):
        parse_queries("-- name: a :one\nSELECT 1\n-- name: a :one\nSELECT 2")


def test_a_name_defined_in_two_query_files_is_refused(tmp_path):
    first, second = tmp_path / "queries.sql", tmp_path / "api.sql"
    first.write_text("-- name: a :one\nSELECT 1\n")
    second.write_text("-- name: b :one\nSELECT 2\n-- name: a :val\nSELECT 3\n")
    with pytest.raises(ValueError, match="'a' is defined twice"):
        load_queries([first, second])
    second.write_text("-- name: b :one\nSELECT 2\n")
    assert set(load_queries([first, second])) == {"a", "b"}


def test_migrations_are_ordered_and_numbered():
    versions = [v for v, _ in migrations()]
    assert versions == sorted(versions) and versions[0].startswith("0001_")
    assert all(re.fullmatch(r"\d{4}_\w+", v) for v in versions)


def test_schema_comments_every_status():
    text = dict(migrations())["0001_jobs"]
    for status in ("pending", "processing", "completed", "failed", "cancelled"):
        assert re.search(rf"--\s+{status}\s+:", text), f"status {status} has no comment"
