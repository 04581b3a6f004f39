"""Load: four real worker processes (two straight to PostgreSQL, two through the real
PgBouncer in transaction mode, as a pooled deployment runs them) and eight inserting clients
(four direct, four through PgBouncer, one INSERT per job, as applications enqueue), noop
jobs mixed with scans of a local site.

Every job must end exactly once (one `completed` event per job on the status channel, none
failed, none run twice), no deadlock may occur (pg_stat_database and the server log), and
the pickup latency (started_at - greatest(created_at, run_at)) is printed with the total
time; speed is only held to a very generous sanity bound, as the machine is shared."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable

import asyncpg
import pytest

from tests.support.pgbouncer import PgBouncer
from tests.support.processes import WorkerProcess
from tests.support.sites import Site
from tests.support.waits import StatusWatcher
from worker.embedded_pg import EmbeddedPostgres

CLIENTS = 8
WORKERS = 4
Spawn = Callable[..., Awaitable[WorkerProcess]]


async def client(dsn: str, jobs: list[tuple[str, str]]) -> list[int]:
    """One inserting client: one INSERT statement per job; unprepared statements so that
    the same code runs through PgBouncer in transaction mode."""
    conn = await asyncpg.connect(dsn, statement_cache_size=0)
    try:
        return [
            await conn.fetchval(
                "INSERT INTO jobs (job_type, payload) VALUES ($1, $2::jsonb) RETURNING id",
                job_type,
                payload,
            )
            for job_type, payload in jobs
        ]
    finally:
        await conn.close()


def deal(noops: int, scans: int, domain: str) -> list[list[tuple[str, str]]]:
    """The jobs of each client: noops with the scans spread evenly through them."""
    every = max((noops + scans) // max(scans, 1), 1)
    jobs: list[tuple[str, str]] = []
    scan = ("sitemap_scan", json.dumps({"domain": domain}))
    left = scans
    for i in range(noops):
        if left and i % every == 0:
            jobs.append(scan)
            left -= 1
        jobs.append(("noop", "{}"))
    jobs += [scan] * left
    return [jobs[i::CLIENTS] for i in range(CLIENTS)]


async def run_load(
    spawn: Spawn,
    direct: asyncpg.Connection,
    direct_dsn: str,
    database: str,
    bouncer: PgBouncer,
    pg_server: EmbeddedPostgres,
    watcher: StatusWatcher,
    site: Site,
    *,
    noops: int,
    scans: int,
) -> None:
    pooled_dsn = bouncer.dsn(database)
    log_offset = pg_server.log_file.stat().st_size
    deadlocks_before = await direct.fetchval(
        "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
    )
    env = {
        "WORKER_ALLOW_PRIVATE_NETWORKS": "true",
        "WORKER_LEASE": "30",
    }  # no lease may lapse on a loaded 2-core machine
    workers = [
        await spawn("run", ready=False, **env, **({"DATABASE_URL": pooled_dsn} if i % 2 else {}))
        for i in range(WORKERS)
    ]
    for worker in workers:  # started together, then each awaited: latency is not start-up
        await worker.wait_ready(timeout=30)
    total = noops + scans
    began = time.monotonic()
    per_client = deal(noops, scans, site.origin)
    inserted = await asyncio.gather(
        *(client(pooled_dsn if i % 2 else direct_dsn, jobs) for i, jobs in enumerate(per_client))
    )
    insert_s = time.monotonic() - began
    ids = {job_id for ids in inserted for job_id in ids}
    assert len(ids) == total
    await watcher.wait_until(
        "SELECT count(*) = $1 FROM jobs WHERE status IN ('completed', 'failed')",
        total,
        timeout=60 + total / 100,
    )
    total_s = time.monotonic() - began

    stats = await direct.fetchrow(
        "SELECT count(*) FILTER (WHERE status = 'completed') AS completed,"
        " min(attempts) AS min_attempts, max(attempts) AS max_attempts,"
        " count(*) FILTER (WHERE error IS NOT NULL) AS errors FROM jobs"
    )
    latency = await direct.fetchrow(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY s) AS p50,"
        "       percentile_cont(0.99) WITHIN GROUP (ORDER BY s) AS p99, max(s) AS max"
        "  FROM (SELECT extract(epoch FROM started_at - greatest(created_at, run_at))::float8 AS s"
        "          FROM jobs) AS pickup"
    )
    scan_latency = await direct.fetchval(
        "SELECT percentile_cont(0.99) WITHIN GROUP (ORDER BY"
        " extract(epoch FROM started_at - greatest(created_at, run_at))::float8)"
        " FROM jobs WHERE job_type = 'sitemap_scan'"
    )
    deadlocks = await direct.fetchval(
        "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
    )
    with pg_server.log_file.open("rb") as f:
        f.seek(log_offset)
        server_log = f.read().decode(errors="replace")
    print(
        f"\nload: {noops} noops + {scans} scans, {WORKERS} workers (2 via PgBouncer),"
        f" {CLIENTS} clients (4 via PgBouncer): inserted in {insert_s:.1f} s, all ended in"
        f" {total_s:.1f} s ({total / total_s:.0f} jobs/s); pickup latency p50"
        f" {latency['p50'] * 1000:.0f} ms, p99 {latency['p99'] * 1000:.0f} ms, max"
        f" {latency['max'] * 1000:.0f} ms; scans p99 {scan_latency * 1000:.0f} ms;"
        f" deadlocks {deadlocks - deadlocks_before}"
    )

    assert stats["completed"] == total and stats["errors"] == 0, dict(stats)
    assert stats["min_attempts"] == stats["max_attempts"] == 1, dict(stats)  # none ran twice
    events = Counter(job for job, status in watcher.events if status == "completed")
    assert set(events) == ids, f"{len(ids - set(events))} jobs without a completed event"
    assert set(events.values()) == {1}, [j for j, n in events.items() if n > 1][:10]
    assert not [e for e in watcher.events if e[1] == "failed"]
    assert await direct.fetchval("SELECT count(*) FROM sitemap_urls") == 20 * scans
    assert deadlocks == deadlocks_before
    assert "deadlock detected" not in server_log
    for worker in workers:
        assert worker.proc.returncode is None, worker.log()
        assert not [line for line in worker.lines if "ERROR" in line or "Traceback" in line], (
            worker.log()
        )
    assert latency["p99"] < 60, "pickup p99 over a minute: the queue is not being drained"


async def test_four_workers_eight_clients_noops_and_scans(
    spawn: Spawn,
    direct: asyncpg.Connection,
    direct_dsn: str,
    database: str,
    bouncer: PgBouncer,
    pg_server: EmbeddedPostgres,
    watcher: StatusWatcher,
    site: Site,
) -> None:
    """Short variant: 4,000 noops and 10 scans."""
    await run_load(
        spawn, direct, direct_dsn, database, bouncer, pg_server, watcher, site, noops=4000, scans=10
    )


@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_four_workers_eight_clients_noops_and_scans_long(
    spawn: Spawn,
    direct: asyncpg.Connection,
    direct_dsn: str,
    database: str,
    bouncer: PgBouncer,
    pg_server: EmbeddedPostgres,
    watcher: StatusWatcher,
    site: Site,
) -> None:
    """20,000 noops and 50 scans."""
    await run_load(
        spawn,
        direct,
        direct_dsn,
        database,
        bouncer,
        pg_server,
        watcher,
        site,
        noops=20_000,
        scans=50,
    )
