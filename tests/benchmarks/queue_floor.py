"""Where a drain's time goes, and what each server-side cost is worth (issue 20's floor).

Issue 20 asks for a drain at twice PgQueuer's rate at `--concurrency 10`; where a target
cannot be met, for the measured floor and what would move it. This prints both, on one
private PostgreSQL (fsync on) over TCP on 127.0.0.1:

- the pieces of one round trip, on a direct connection: `SELECT 1`, the same as
  `COPY ... TO STDOUT` (the claim's one-trip path), and a one-row UPDATE's commit with and
  without waiting for the WAL flush (the difference is the flush);
- the server time of the one claim statement (`sitemap_worker_end_and_claim`, completions
  and claim), from `pg_stat_user_functions` over a drain (`track_functions = all` in that
  database only, in a round of its own);
- the drain of N no-op jobs by a real `run --burst --concurrency 10` process with its server
  costs taken away one at a time, each variant in a database of its own, rounds interleaved:
  every user trigger on `jobs` disabled; only the indexes the claim reads (the list
  indexes of the API, dashboard and domains dropped); commits that do not wait for the WAL
  flush; all three. The rate counts from the process's start to its exit, less the median
  time the same process takes on an empty queue (start-up and shutdown).

    python -m tests.benchmarks.queue_floor [--jobs 20000] [--repeat 3] [--tree DIR]

`--tree DIR` adds a variant that runs the worker from another source tree (an engine
change to weigh against this checkout's, say), migrated with its own migrations.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.benchmarks import queue_bench as bench  # noqa: E402
from tests.benchmarks.queue_issue_method import server, with_database  # noqa: E402
from worker.report import table  # noqa: E402

CONCURRENCY = 10

# The indexes on jobs that no claim, completion or lease renewal reads: the API's,
# dashboard's and domains' lists (migrations 0011, 0017) and the batch parent lookup.
LIST_INDEXES = (
    "jobs_status_idx",
    "jobs_tenant_idx",
    "jobs_tenant_status_idx",
    "jobs_domain_idx",
    "jobs_idempotency_key",
    "jobs_parent_idx",
)
NO_TRIGGERS = "ALTER TABLE jobs DISABLE TRIGGER USER"
NO_LIST_INDEXES = "; ".join(f"DROP INDEX {name}" for name in LIST_INDEXES)


def no_flush_wait(database: str) -> str:
    return f'ALTER DATABASE "{database}" SET synchronous_commit = off'


@dataclass
class Variant:
    name: str
    database: str
    setup: list[str]
    tree: Path = ROOT
    rates: list[float] = field(default_factory=list)
    idle: list[float] = field(default_factory=list)  # seconds of a run on an empty queue


async def run_burst(dsn: str, tree: Path) -> float:
    """Seconds a `run --burst` process of `tree` takes from start to exit."""
    env = dict(os.environ) | {
        "PYTHONPATH": str(tree),
        "DATABASE_URL": dsn,
        "WORKER_LOG_LEVEL": "WARNING",
    }
    began = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "worker",
        "run",
        "--burst",
        "--concurrency",
        str(CONCURRENCY),
        env=env,
        cwd=tree,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await process.communicate()
    took = time.perf_counter() - began
    if process.returncode != 0:
        raise RuntimeError(f"worker exited {process.returncode}: {err.decode()[-2000:]}")
    return took


async def migrate_tree(dsn: str, tree: Path) -> None:
    env = dict(os.environ) | {"PYTHONPATH": str(tree), "DATABASE_URL": dsn}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "worker", "migrate", env=env, cwd=tree,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"migrate failed: {err.decode()[-2000:]}")


async def refill(conn: asyncpg.Connection, jobs: int) -> None:
    await conn.execute("TRUNCATE jobs CASCADE")
    if jobs:
        await conn.execute(
            "INSERT INTO jobs (job_type, payload) SELECT 'noop', '{}' FROM generate_series(1, $1)",
            jobs,
        )
    await conn.execute("VACUUM ANALYZE jobs")


async def drain_once(dsn: str, variant: Variant, jobs: int) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await refill(conn, 0)
        variant.idle.append(await run_burst(dsn, variant.tree))
        await refill(conn, jobs)
        took = await run_burst(dsn, variant.tree)
        done = await conn.fetchval("SELECT count(*) FROM jobs WHERE status = 'completed'")
        if done != jobs:
            raise RuntimeError(f"{variant.name}: {done} of {jobs} jobs completed")
    finally:
        await conn.close()
    variant.rates.append(jobs / max(took - statistics.median(variant.idle), 1e-6))


async def median_us(call: Callable[[], Awaitable[object]], rounds: int) -> float:
    for _ in range(rounds // 10):  # warm-up
        await call()
    times = []
    for _ in range(rounds):
        began = time.perf_counter()
        await call()
        times.append(time.perf_counter() - began)
    return statistics.median(times) * 1e6


async def round_trip_pieces(dsn: str, rounds: int = 2000) -> dict[str, float]:
    conn = await asyncpg.connect(dsn, statement_cache_size=0)
    try:
        await conn.execute("CREATE TABLE IF NOT EXISTS floor_one (id int PRIMARY KEY, n int)")
        await conn.execute("INSERT INTO floor_one VALUES (1, 0) ON CONFLICT DO NOTHING")

        async def sink(_: bytes) -> None:
            pass

        update = "UPDATE floor_one SET n = n + 1 WHERE id = 1"
        pieces = {
            "SELECT 1 (round trip)": await median_us(lambda: conn.execute("SELECT 1"), rounds),
            "COPY (SELECT 1) TO STDOUT": await median_us(
                lambda: conn.copy_from_query("SELECT 1", output=sink), rounds
            ),
            "one-row UPDATE, commit waits for the WAL flush": await median_us(
                lambda: conn.execute(update), rounds
            ),
        }
        await conn.execute("SET synchronous_commit = off")
        pieces["one-row UPDATE, commit does not wait"] = await median_us(
            lambda: conn.execute(update), rounds
        )
        await conn.execute("DROP TABLE floor_one")
        return pieces
    finally:
        await conn.close()


async def statement_breakdown(
    dsn: str, database: str, jobs: int, tree: Path = ROOT
) -> dict[str, float]:
    """Server time per claim statement over one drain, with track_functions in one database."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"ALTER DATABASE \"{database}\" SET track_functions = 'all'")
        await refill(conn, jobs)
        await conn.execute("SELECT pg_stat_reset()")
        await run_burst(dsn, tree)
        query = (
            "SELECT funcname, calls, total_time FROM pg_stat_user_functions"
            " WHERE funcname LIKE 'sitemap_worker_%'"
        )
        deadline = time.monotonic() + 10
        last_calls = -1
        while True:  # the worker's backends report their counts as they exit, just after it
            await conn.execute("SELECT pg_stat_clear_snapshot()")
            rows = {r["funcname"]: r for r in await conn.fetch(query)}
            top = rows.get("sitemap_worker_end_and_claim")
            calls = top["calls"] if top is not None else 0
            settled = calls * CONCURRENCY >= jobs and calls == last_calls
            last_calls = calls
            if settled or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        await conn.execute(f'ALTER DATABASE "{database}" RESET track_functions')
    finally:
        await conn.close()
    if top is None or not calls:
        raise RuntimeError("no function statistics: is track_functions allowed here?")
    return {
        "statements": calls,
        "jobs per statement": jobs / calls,
        "server ms per statement": top["total_time"] / calls,
        "of which completions": rows["sitemap_worker_complete"]["total_time"] / calls,
        "of which claim": rows["sitemap_worker_claim"]["total_time"] / calls,
    }


async def main(args: argparse.Namespace) -> int:
    async with server() as dsn:
        admin = await asyncpg.connect(dsn)
        variants = [
            Variant("as shipped", "floor_base", []),
            Variant("user triggers on jobs disabled", "floor_no_triggers", [NO_TRIGGERS]),
            Variant("only the claim's indexes", "floor_claim_indexes", [NO_LIST_INDEXES]),
            Variant(
                "commit without waiting for the WAL flush",
                "floor_no_flush",
                [no_flush_wait("floor_no_flush")],
            ),
            Variant(
                "all three",
                "floor_all",
                [NO_TRIGGERS, NO_LIST_INDEXES, no_flush_wait("floor_all")],
            ),
        ]
        if args.tree:
            tree = Path(args.tree).resolve()
            variants.append(Variant(f"worker from {tree}", "floor_tree", [], tree=tree))
        try:
            for v in variants:
                await admin.execute(f'CREATE DATABASE "{v.database}"')
                db = with_database(dsn, v.database)
                await migrate_tree(db, v.tree)
                conn = await asyncpg.connect(db)
                try:
                    for statement in v.setup:
                        await conn.execute(statement)
                finally:
                    await conn.close()
            base_dsn = with_database(dsn, variants[0].database)
            pieces = await round_trip_pieces(base_dsn)
            for r in range(args.repeat):
                for v in variants:
                    await drain_once(with_database(dsn, v.database), v, args.jobs)
                    print(
                        f"drain {r + 1}/{args.repeat} {v.name}: {v.rates[-1]:,.0f} jobs/s",
                        flush=True,
                    )
            breakdown = await statement_breakdown(base_dsn, variants[0].database, args.jobs)
            other = None
            if args.tree:
                v = variants[-1]
                other = await statement_breakdown(
                    with_database(dsn, v.database), v.database, args.jobs, v.tree
                )
        finally:
            for v in variants:
                await admin.execute(f'DROP DATABASE IF EXISTS "{v.database}" WITH (FORCE)')
            await admin.close()
    report(variants, pieces, breakdown)
    if other is not None:
        print(
            f"{variants[-1].name}: {other['statements']:,.0f} claim statements, "
            f"{other['jobs per statement']:.1f} jobs each, server time "
            f"{other['server ms per statement']:.3f} ms each"
        )
    return 0


def report(variants: list[Variant], pieces: dict[str, float], breakdown: dict[str, float]) -> None:
    base = statistics.median(variants[0].rates)
    print()
    print(
        table(
            ("variant", "drain jobs/s", "vs as shipped"),
            [
                (v.name, bench.spread(v.rates), f"{statistics.median(v.rates) / base:.2f}x")
                for v in variants
            ],
        )
    )
    print()
    print(
        table(
            ("one round trip, direct connection", "median us"),
            [(k, f"{v:.0f}") for k, v in pieces.items()],
        )
    )
    flush = (
        pieces["one-row UPDATE, commit waits for the WAL flush"]
        - pieces["one-row UPDATE, commit does not wait"]
    )
    copy = pieces["COPY (SELECT 1) TO STDOUT"]
    per_stmt = breakdown["jobs per statement"]
    server_ms = breakdown["server ms per statement"]
    cycle_ms = per_stmt / base * 1000
    rest = cycle_ms - server_ms - flush / 1000 - copy / 1000
    print()
    print(
        f"claim statements: {breakdown['statements']:,.0f} for the drain, "
        f"{per_stmt:.1f} jobs each; server time {server_ms:.3f} ms each "
        f"(completions {breakdown['of which completions']:.3f}, claim {breakdown['of which claim']:.3f})"
    )
    print(
        f"one cycle of {per_stmt:.1f} jobs at {base:,.0f} jobs/s: {cycle_ms:.2f} ms = server "
        f"{server_ms:.2f} + WAL flush {flush / 1000:.2f} + COPY round trip {copy / 1000:.2f} + "
        f"the rest (Python, parse and plan, protocol) {rest:.2f}"
    )
    floor = per_stmt / (server_ms + flush / 1000 + copy / 1000) * 1000
    print(
        f"with no Python at all, one statement in flight: at most {floor:,.0f} jobs/s "
        f"({floor / base:.2f}x as shipped)"
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--tree", help="another source tree whose worker to add as a variant")
    return parser.parse_args()


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
