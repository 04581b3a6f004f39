"""Which index each status-filtered API, dashboard and metrics query reads, with jobs_status_idx
partial (migration 0017: no 'processing' entries) and full (before it), on a big table:
`python -m tests.benchmarks.queue_status_index_plans [--jobs 1000000]`.

Builds the jobs table of api_bench (1% failed, 0.1% pending, the rest completed, 100
tenants) in a private PostgreSQL, turns --processing pending rows into processing ones
(live leases, as running workers hold them), ANALYZEs, and prints for every query and
status filter the indexes its plan reads and its EXPLAIN ANALYZE time (the bulk UPDATEs:
planned only, time 0), under both indexes.
A row whose plan reads no index (a sequential scan) is marked: that is what must not
happen on a big table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg

from tests.benchmarks.api_bench import build_jobs
from tests.support.fast_pg import FastPostgres
from worker.migrate import migrate
from worker.report import table
from worker.settings import Settings
from worker.sql import q

STATUSES = ("pending", "processing", "completed", "failed", "cancelled")
FULL = "CREATE INDEX jobs_status_idx ON jobs (status, id)"
WRITES = {"dash_bulk_cancel", "dash_bulk_retry"}
PARTIAL = "CREATE INDEX jobs_status_idx ON jobs (status, id) WHERE status <> 'processing'"


def cases(top: int) -> Iterator[tuple[str, str, tuple[Any, ...]]]:
    """(label, query name, arguments): every status filter the API and dashboard offer."""
    for status in STATUSES:
        yield f"api list status={status}", "api_list_jobs", (None, status, None, None, None, 50)
        yield (
            f"dash page status={status}",
            "dash_jobs_page",
            (None, status, None, None, None, None, 50),
        )
    yield (
        "api list tenant, processing",
        "api_list_jobs",
        ("tenant-7", "processing", None, None, None, 50),
    )
    yield "dash page error text", "dash_jobs_page", (None, None, None, None, "404", None, 50)
    yield "dash status counts", "dash_status_counts", (None, 1000)
    yield "metrics queue depth", "queue_depth", ()
    yield "dash recent failures", "dash_recent_failures", (None, 20)
    yield "dash workers", "dash_workers", (None, 5)
    for moves in (["pending", "processing"], ["failed", "cancelled"]):
        label = f"dash bulk preview {'+'.join(moves)}"
        yield label, "dash_bulk_preview", (None, None, None, None, None, top, moves)
        yield (
            f"dash bulk preview status=processing in {'+'.join(moves)}",
            "dash_bulk_preview",
            (None, "processing", None, None, None, top, moves),
        )
    # UPDATEs: planned only (EXPLAIN without ANALYZE), not run.
    yield "dash bulk cancel (plan)", "dash_bulk_cancel", (None, None, None, None, None, top)
    yield "dash bulk retry (plan)", "dash_bulk_retry", (None, None, None, None, None, top)


def indexes(plan: dict[str, Any]) -> tuple[set[str], bool]:
    """Index names a plan reads, and whether it scans the jobs heap sequentially."""
    names: set[str] = set()
    seq = False
    stack = [plan]
    while stack:
        node = stack.pop()
        if "Index Name" in node:
            names.add(node["Index Name"])
        if node.get("Node Type") == "Seq Scan" and node.get("Relation Name") == "jobs":
            seq = True
        stack.extend(node.get("Plans", []))
    return names, seq


async def explain(conn: asyncpg.Connection, top: int) -> dict[str, tuple[str, float]]:
    out: dict[str, tuple[str, float]] = {}
    for label, name, args in cases(top):
        run = "" if name in WRITES else "ANALYZE, "
        raw = await conn.fetchval(f"EXPLAIN ({run}FORMAT JSON) {q(name)}", *args)
        doc = json.loads(raw)[0]
        names, seq = indexes(doc["Plan"])
        used = ", ".join(sorted(names)) or "-"
        out[label] = (used + (" + SEQ SCAN" if seq else ""), doc.get("Execution Time", 0.0))
    return out


async def measure(dsn: str, args: argparse.Namespace) -> None:
    conn = await asyncpg.connect(dsn, statement_cache_size=0)
    try:
        await build_jobs(conn, args.jobs)
        await conn.execute(
            "UPDATE jobs SET status = 'processing', owner = 'w-' || (id % 4),"
            " lease_expires_at = now() + interval '1 hour', started_at = now()"
            " WHERE id IN (SELECT id FROM jobs WHERE status = 'pending' ORDER BY id LIMIT $1)",
            args.processing,
        )
        top = await conn.fetchval("SELECT max(id) FROM jobs")
        runs: dict[str, dict[str, tuple[str, float]]] = {}
        for version, ddl in (("0017 partial", PARTIAL), ("full (0016)", FULL)):
            await conn.execute("DROP INDEX jobs_status_idx")
            await conn.execute(ddl)
            await conn.execute("VACUUM ANALYZE jobs")
            await explain(conn, top)  # warm the cache
            runs[version] = await explain(conn, top)
            size = await conn.fetchval("SELECT pg_size_pretty(pg_relation_size('jobs_status_idx'))")
            print(f"{version}: jobs_status_idx {size}", flush=True)
        partial, full = runs["0017 partial"], runs["full (0016)"]
        rows = [
            (
                label,
                partial[label][0],
                f"{partial[label][1]:.2f}",
                full[label][0],
                f"{full[label][1]:.2f}",
            )
            for label in partial
        ]
        print(table(("query", "reads (0017)", "ms (0017)", "reads (before)", "ms (before)"), rows))
        if any("SEQ SCAN" in used for used, _ in partial.values()):
            print("A query scans jobs sequentially with the partial index", flush=True)
            sys.exit(1)
    finally:
        await conn.close()


async def main(args: argparse.Namespace) -> None:
    base = Path(tempfile.mkdtemp(prefix="status-plans-", dir="/tmp"))
    base.chmod(0o755)
    server = FastPostgres(base / "data", tcp=True)
    server.start()
    try:
        admin = await asyncpg.connect(server.dsn)
        await admin.execute("CREATE DATABASE plans")
        await admin.close()
        dsn = f"postgresql://postgres@127.0.0.1:{server.port}/plans"
        await migrate(dsn, Settings(database_url=dsn))
        await measure(dsn, args)
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks.queue_status_index_plans")
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--processing", type=int, default=200, help="pending rows made processing")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
