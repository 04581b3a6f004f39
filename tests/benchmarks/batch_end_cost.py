"""What ending one child of a big batch costs in the database (the batch trigger's price).

    python3 tests/benchmarks/batch_end_cost.py [--children 10000] [--ends 300] DSN

Makes a scratch database (dropped afterwards) on the server of DSN (or DATABASE_URL), applies the migrations, inserts one detached `sitemap_batch` with
N `processing` children, then ends children one at a time, each in its own transaction
through `sitemap_worker_complete` (the worker's own statement), and prints the median and
95th percentile per end: first with the batch triggers, then with them disabled (the
statement's own cost), and the cost of the last end, which completes the batch.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

import asyncpg

from worker.migrate import migrate
from worker.settings import Settings

OWNER = "bench-batch-end"


async def setup(conn: asyncpg.Connection, children: int) -> tuple[int, list[int]]:
    await conn.execute("DELETE FROM jobs")
    parent = await conn.fetchval(
        "INSERT INTO jobs (job_type, payload, status, started_at)"
        " VALUES ('sitemap_batch', '{\"domains\": [\"x\"]}', 'processing', now()) RETURNING id"
    )
    ids = [
        r["id"]
        for r in await conn.fetch(
            "INSERT INTO jobs (job_type, payload, parent_id, status, owner, attempts,"
            "                  lease_expires_at, started_at)"
            " SELECT 'sitemap_scan', jsonb_build_object('domain', 'd' || g || '.test'), $1,"
            "        'processing', $2, 1, now() + interval '1 hour', now()"
            "   FROM generate_series(1, $3) g RETURNING id",
            parent,
            OWNER,
            children,
        )
    ]
    await conn.execute("VACUUM ANALYZE jobs")
    return parent, sorted(ids)


async def end_one(conn: asyncpg.Connection, job_id: int) -> float:
    began = time.perf_counter()
    await conn.fetch(
        "SELECT sitemap_worker_complete($1, $2::bigint[], $3::text[])",
        OWNER,
        [job_id],
        ['{"sitemap_count": 1, "url_count": 2, "error_count": 0}'],
    )
    return (time.perf_counter() - began) * 1000


async def batch_triggers(conn: asyncpg.Connection) -> list[str]:
    return [
        r["tgname"]
        for r in await conn.fetch(
            "SELECT tgname FROM pg_trigger WHERE tgrelid = 'jobs'::regclass AND NOT tgisinternal"
            "   AND (tgname LIKE '%batch%' OR tgname LIKE '%children%') ORDER BY tgname"
        )
    ]


def figures(label: str, times: list[float]) -> None:
    times = sorted(times)
    p95 = times[int(len(times) * 0.95) - 1]
    print(
        f"{label}: median {statistics.median(times):.2f} ms, p95 {p95:.2f} ms over {len(times)} ends"
    )


async def main(dsn: str, children: int, ends: int) -> None:
    admin = await asyncpg.connect(dsn)
    name = f"bench_batch_end_{int(time.time())}"
    await admin.execute(f"CREATE DATABASE {name}")
    try:
        target = dsn.rsplit("/", 1)[0] + f"/{name}"
        await migrate(target, Settings(database_url=target))
        conn = await asyncpg.connect(target)
        try:
            triggers = await batch_triggers(conn)
            parent, ids = await setup(conn, children)
            figures(f"with batch triggers {triggers}", [await end_one(conn, i) for i in ids[:ends]])
            for tg in triggers:
                await conn.execute(f"ALTER TABLE jobs DISABLE TRIGGER {tg}")
            figures(
                "batch triggers disabled", [await end_one(conn, i) for i in ids[ends : 2 * ends]]
            )
            for tg in triggers:
                await conn.execute(f"ALTER TABLE jobs ENABLE TRIGGER {tg}")
            # The rest at once, but the last one: then the last end completes the batch.
            parent, ids = await setup(conn, children)
            await conn.fetch(
                "SELECT sitemap_worker_complete($1, $2::bigint[], $3::text[])",
                OWNER,
                ids[:-1],
                ["{}"] * (len(ids) - 1),
            )
            last = await end_one(conn, ids[-1])
            row = await conn.fetchrow("SELECT status, progress FROM jobs WHERE id = $1", parent)
            print(
                f"last end (completes the batch): {last:.1f} ms -> batch {row['status']}"
                f" at {row['progress']}"
            )
        finally:
            await conn.close()
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dsn", nargs="?", default=None)
    parser.add_argument("--children", type=int, default=10_000)
    parser.add_argument("--ends", type=int, default=300)
    args = parser.parse_args()
    dsn = args.dsn or os.environ.get("DATABASE_URL")
    if not dsn:
        parser.error("give a DSN of a server where a database may be created (or DATABASE_URL)")
    asyncio.run(main(dsn, args.children, args.ends))
