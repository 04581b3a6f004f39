"""sql/schema.sql is the current schema: a database built from it equals one built from the
migrations, compared by `pg_dump --schema-only`, and the comparison notices a divergence."""

from __future__ import annotations

import difflib
import re
import subprocess

import psycopg
import pytest

from tests.conftest import admin_dsn, scratch_database
from worker.embedded_pg import EmbeddedPostgres, find_bindir
from worker.sql import sql_dir

# Lines of a dump that say nothing about the schema: pg_dump's own comments, its session
# settings, and the random \restrict key of recent versions.
_NOISE = ("--", "SET ", "SELECT pg_catalog.set_config", "\\restrict", "\\unrestrict")


def schema_dump(server: EmbeddedPostgres, dbname: str) -> dict[str, list[str]]:
    """The database's schema as pg_dump writes it, one entry per object (keyed by pg_dump's
    "Name: ...; Type: ..." line), without noise lines and without the migrations' own table
    (`migrate` creates it; sql/schema.sql does not)."""
    out = subprocess.run(
        [
            str(find_bindir() / "pg_dump"),
            "--schema-only",
            "--no-owner",
            "--no-privileges",
            "--exclude-table=sitemap_worker_migrations",
            "-h",
            "127.0.0.1",
            "-p",
            str(server.port),
            "-U",
            "postgres",
            "-d",
            dbname,
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    objects: dict[str, list[str]] = {}
    current = objects.setdefault("(preamble)", [])
    for line in out.splitlines():
        if line.startswith("-- Name: "):
            current = objects.setdefault(line.removeprefix("-- Name: "), [])
        elif line.strip() and not line.startswith(_NOISE):
            current.append(line)
    return objects


def drift(migrated: dict[str, list[str]], from_schema: dict[str, list[str]]) -> str:
    """Every object that is missing on one side or defined differently, with a diff; empty
    when the two schemas agree."""
    report = []
    for name in sorted(migrated.keys() | from_schema.keys()):
        if name not in from_schema:
            report.append(f"only in the migrations: {name}\n  " + "\n  ".join(migrated[name]))
        elif name not in migrated:
            report.append(f"only in sql/schema.sql: {name}\n  " + "\n  ".join(from_schema[name]))
        elif migrated[name] != from_schema[name]:
            report.append(
                f"differs: {name}\n"
                + "\n".join(
                    difflib.unified_diff(
                        migrated[name],
                        from_schema[name],
                        "migrations",
                        "sql/schema.sql",
                        n=1,
                        lineterm="",
                    )
                )
            )
    return "\n".join(report)


def build_from_schema_file(server: EmbeddedPostgres, dbname: str) -> None:
    with psycopg.connect(admin_dsn(server, dbname)) as conn:  # one transaction, as psql -1
        conn.execute((sql_dir() / "schema.sql").read_text(encoding="utf-8"))


@pytest.fixture
def schema_file_dump(pg_server: EmbeddedPostgres) -> list[str]:
    with scratch_database(pg_server, "sf") as name:
        build_from_schema_file(pg_server, name)
        return schema_dump(pg_server, name)


def test_schema_file_equals_the_migrations(pg_server, database, schema_file_dump):
    migrated = schema_dump(pg_server, database)  # a copy of the migrated template
    assert any(k.startswith("sitemap_worker_claim(") for k in migrated), sorted(migrated)
    diff = drift(migrated, schema_file_dump)
    assert not diff, "sql/schema.sql and the migrations build different schemas:\n" + diff


@pytest.mark.parametrize(
    "diverging, named",
    [
        ("CREATE INDEX jobs_drift_probe_idx ON jobs (job_type)", "jobs_drift_probe_idx"),
        (
            (
                "CREATE OR REPLACE FUNCTION sitemap_worker_renew(p_owner text, p_ids bigint[],"
                " p_lease_seconds double precision) RETURNS SETOF bigint LANGUAGE sql"
                " AS $$ SELECT unnest(p_ids) $$"
            ),
            "sitemap_worker_renew",
        ),
        ("ALTER TABLE jobs ALTER COLUMN priority SET DEFAULT 5", "differs: jobs; Type: TABLE"),
    ],
)
def test_drift_check_names_a_diverging_migration(
    pg_server, database, schema_file_dump, diverging, named
):
    """The check bites: one more statement after the migrations (as a migration without
    its counterpart in sql/schema.sql would be) shows in the diff, by name."""
    with psycopg.connect(admin_dsn(pg_server, database), autocommit=True) as conn:
        conn.execute(diverging)
    diff = drift(schema_dump(pg_server, database), schema_file_dump)
    print(diff)
    headlines = [line for line in diff.splitlines() if line.startswith(("only in", "differs"))]
    assert headlines and all(named in line for line in headlines), diff


async def test_every_status_change_is_named_at_the_top_of_the_schema_file(direct):
    """A newcomer learns every status change from the header of sql/schema.sql: each
    function that writes jobs.status (found in the live catalog, not in the file) and
    each status are named there."""
    text = (sql_dir() / "schema.sql").read_text(encoding="utf-8")
    header = text[: text.index("CREATE TABLE")]
    writers = {
        r["proname"]
        for r in await direct.fetch(
            r"""SELECT proname FROM pg_proc
             WHERE pronamespace = 'public'::regnamespace
               AND prosrc ~* '\mUPDATE\s+jobs\M' AND prosrc ~* '\mstatus\s*='"""
        )
    }
    assert {
        "sitemap_worker_claim",
        "sitemap_worker_fail",
        "sitemap_worker_retry",
        "sitemap_worker_release",
        "sitemap_worker_fail_lost",
    } <= writers
    unnamed = sorted(name for name in writers if name not in header)
    assert not unnamed, f"functions that change jobs.status but are not in the header: {unnamed}"
    for status in ("pending", "processing", "completed", "failed", "cancelled"):
        assert re.search(rf"^--\s+{status}\s", header, re.MULTILINE), status
