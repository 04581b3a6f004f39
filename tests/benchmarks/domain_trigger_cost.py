"""What the domains' end-of-scan trigger (jobs_record_domain_scan, migration 0016) costs jobs
that are not scans: `python -m tests.benchmarks.domain_trigger_cost`.

In a PostgreSQL of its own (tests/support/fast_pg), N noop jobs are ended in statements of
1,000 (the way completions go out together), with the trigger and with it dropped,
alternating rounds on fresh rows; prints the median time per round of each.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from pathlib import Path

import asyncpg

from tests.support.fast_pg import FastPostgres
from worker.migrate import migrate
from worker.settings import Settings

TRIGGER = """
CREATE TRIGGER jobs_record_domain_scan AFTER UPDATE OF status ON jobs FOR EACH ROW
    WHEN (NEW.job_type = 'sitemap_scan'
          AND NEW.status IN ('completed', 'failed', 'cancelled')
          AND OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION sitemap_worker_record_domain_scan()
"""


async def one_round(conn: asyncpg.Connection, jobs: int) -> float:
    await conn.execute(
        "INSERT INTO jobs (job_type, payload, status, owner)"
        " SELECT 'noop', '{}', 'processing', 'bench' FROM generate_series(1, $1)",
        jobs,
    )
    first = await conn.fetchval("SELECT min(id) FROM jobs WHERE status = 'processing'")
    began = time.perf_counter()
    for start in range(first, first + jobs, 1000):
        await conn.execute(
            "UPDATE jobs SET status = 'completed', progress = 1 WHERE id BETWEEN $1 AND $2",
            start,
            start + 999,
        )
    took = time.perf_counter() - began
    await conn.execute("TRUNCATE jobs CASCADE")
    return took


async def main(args: argparse.Namespace) -> None:
    base = Path(tempfile.mkdtemp(prefix="trigger-cost-", dir="/tmp"))
    base.chmod(0o755)
    server = FastPostgres(base / "data", tcp=True)
    server.start()
    try:
        await migrate(server.dsn, Settings(database_url=server.dsn))
        conn = await asyncpg.connect(server.dsn)
        times: dict[str, list[float]] = {"with the trigger": [], "without": []}
        for _ in range(args.rounds):
            times["with the trigger"].append(await one_round(conn, args.jobs))
            await conn.execute("DROP TRIGGER jobs_record_domain_scan ON jobs")
            times["without"].append(await one_round(conn, args.jobs))
            await conn.execute(TRIGGER)
        await conn.close()
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)
    print(f"ending {args.jobs:,} noop jobs, 1,000 per UPDATE, {args.rounds} rounds each:")
    for name, took in times.items():
        took.sort()
        median = took[len(took) // 2]
        print(f"  {name:<17} median {median:.3f} s = {args.jobs / median:,.0f} jobs/s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks.domain_trigger_cost")
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    asyncio.run(main(parser.parse_args()))
