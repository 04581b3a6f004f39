"""The statements inside one claim, each with its planning and its run time (issue 20).

`pg_stat_user_functions` gives a claim's server time as a whole; this splits it into the
statements the plpgsql functions run, so that time spent planning shows up where it is.
One private PostgreSQL (fsync on) with pg_stat_statements loaded (`track = all`,
`track_planning = on`), N no-op jobs drained by a real `run --burst --concurrency 10`
process at WARNING, then every statement that ran at least once per claim, per call:

    python -m tests.benchmarks.claim_statements [--jobs 20000] [--tree DIR] [--setup SQL]

`--tree DIR` drains with another source tree's worker and migrations (migration 0018's
claim, say: `git archive <commit> | tar -x -C DIR`); `--setup SQL` runs after migrating,
to try a change to the schema without a tree (an `ALTER FUNCTION ... SET ...`, say).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import asyncpg

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.benchmarks.queue_floor import migrate_tree, refill, run_burst  # noqa: E402
from tests.benchmarks.queue_issue_method import server, with_database  # noqa: E402
from worker.embedded_pg import EmbeddedPostgres  # noqa: E402
from worker.report import table  # noqa: E402

STATEMENTS = """
SELECT calls, total_plan_time / calls * 1000 AS plan_us,
       total_exec_time / calls * 1000 AS run_us,
       left(regexp_replace(query, '\\s+', ' ', 'g'), 90) AS statement
  FROM pg_stat_statements
 WHERE calls >= $1 AND query NOT LIKE '%pg_stat%'
 ORDER BY total_plan_time + total_exec_time DESC
"""


class StatementsPostgres(EmbeddedPostgres):
    """The embedded server with per-statement statistics, nested statements included."""

    SERVER_SETTINGS = (
        *EmbeddedPostgres.SERVER_SETTINGS,
        "shared_preload_libraries=pg_stat_statements",
        "pg_stat_statements.track=all",
        "pg_stat_statements.track_planning=on",
    )


async def main(args: argparse.Namespace) -> int:
    tree = Path(args.tree).resolve() if args.tree else ROOT
    async with server(StatementsPostgres) as dsn:
        admin = await asyncpg.connect(dsn)
        await admin.execute("CREATE DATABASE claim_statements")
        await admin.close()
        db = with_database(dsn, "claim_statements")
        await migrate_tree(db, tree)
        conn = await asyncpg.connect(db)
        try:
            await conn.execute("CREATE EXTENSION pg_stat_statements")
            if args.setup:
                await conn.execute(args.setup)
            await refill(conn, args.jobs)
            await conn.execute("SELECT pg_stat_statements_reset()")
            began = time.perf_counter()
            await run_burst(db, tree)
            took = time.perf_counter() - began
            rows = await conn.fetch(STATEMENTS, args.jobs // 10)  # at least once per claim
        finally:
            await conn.close()
    print(f"{args.jobs:,} jobs drained by {tree} in {took:.2f} s (start-up included)")
    print(
        table(
            ("calls", "plan us", "run us", "statement"),
            [
                (
                    f"{r['calls']:,}",
                    f"{r['plan_us']:.1f}",
                    f"{r['run_us']:.1f}",
                    r["statement"],
                )
                for r in rows
            ],
        )
    )
    print(
        "run us of a statement includes the statements it calls; plan us is its own. A "
        "statement planned on every call (a custom plan) shows plan us well above zero."
    )
    return 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--tree", help="another source tree whose worker and schema to drain with")
    parser.add_argument("--setup", help="SQL to run after migrating, before the drain")
    return parser.parse_args()


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
