"""Dashboard page render times on a big jobs table (default 5 million rows), measured
over real HTTP against the dashboard's own routes on a fast embedded PostgreSQL.

    python -m tests.dashboard.page_bench [--rows 5000000] [--repeat 5]

Rows: 94% completed, 3% failed, 1% cancelled, 1.5% pending, a few processing; ten tenants
and jobs without one; created over about a month, newest last; 50,000 domains. Each page
is requested `repeat` times after one warm-up; the median and the worst are printed (ms,
server time as the client sees it on 127.0.0.1). A benchmark prints figures; it asserts
nothing."""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import asyncpg
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.support.fast_pg import FastPostgres
from worker import connections
from worker.api.scope import POOL, SCOPE, SETTINGS, Scope
from worker.dashboard import add_routes
from worker.migrate import migrate
from worker.settings import Settings

CHUNK = 500_000
FILL = """
INSERT INTO jobs (job_type, payload, status, attempts, error, created_at, run_at,
                  started_at, finished_at, progress, owner, lease_expires_at)
SELECT 'sitemap_scan',
       jsonb_build_object('domain', 'site' || (g % 50000) || '.test',
                          'tenant_id', CASE WHEN g % 11 = 0 THEN NULL
                                            ELSE 'tenant' || (g % 10) END),
       s.status,
       CASE WHEN s.status IN ('completed', 'failed', 'cancelled') THEN 1 ELSE 0 END,
       CASE WHEN s.status = 'failed' THEN
            CASE WHEN g % 100000 = 7 THEN 'certificate expired for site' || g
                 ELSE 'HTTP 503 from sitemap.xml (try ' || (g % 3) || ')' END END,
       c.at, c.at + CASE WHEN s.status = 'pending' AND g % 2 = 0 THEN interval '40 days'
                         ELSE interval '0' END,
       CASE WHEN s.status <> 'pending' THEN c.at + interval '1 second' END,
       CASE WHEN s.status IN ('completed', 'failed', 'cancelled')
            THEN c.at + interval '3 seconds' END,
       CASE WHEN s.status = 'completed' THEN 1 ELSE 0 END,
       CASE WHEN s.status = 'processing' THEN 'bench-worker-' || (g % 4) END,
       CASE WHEN s.status = 'processing' THEN now() + interval '1 hour' END
  FROM generate_series($1::bigint, $2::bigint) g
 CROSS JOIN LATERAL (SELECT CASE WHEN g % 1000 < 940 THEN 'completed'
                                 WHEN g % 1000 < 970 THEN 'failed'
                                 WHEN g % 1000 < 980 THEN 'cancelled'
                                 WHEN g % 100000 < 20 THEN 'processing'
                                 ELSE 'pending' END AS status) s
 CROSS JOIN LATERAL (SELECT now() - ($3::bigint - g) * interval '0.5 seconds' AS at) c
"""


async def fill(dsn: str, rows: int) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        began = time.monotonic()
        for start in range(1, rows + 1, CHUNK):
            await conn.execute(FILL, start, min(start + CHUNK - 1, rows), rows)
        await conn.execute("VACUUM ANALYZE jobs")
        print(f"filled {rows:,} jobs in {time.monotonic() - began:.0f} s")
    finally:
        await conn.close()


async def measure(dsn: str, repeat: int) -> None:
    settings = Settings(database_url=dsn)
    pool = await connections.create_pool(dsn, settings, size=4)
    conn = await asyncpg.connect(dsn)
    mid = await conn.fetchval("SELECT max(id) / 2 FROM jobs")
    one = await conn.fetchval("SELECT max(id) - 5 FROM jobs")
    await conn.close()
    scope_now: list[Scope] = [Scope(tenant_id=None, admin=True)]

    @web.middleware
    async def set_scope(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        request[SCOPE] = scope_now[0]
        return await handler(request)

    app = web.Application(middlewares=[set_scope])
    app[POOL], app[SETTINGS] = pool, settings
    add_routes(app)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    admin = Scope(tenant_id=None, admin=True)
    tenant = Scope(tenant_id="tenant3", admin=False, key_id=1)
    pages = [
        ("overview, admin", admin, "/"),
        ("overview, one tenant", tenant, "/"),
        ("jobs, newest", admin, "/jobs"),
        ("jobs, newest, one tenant", tenant, "/jobs"),
        ("jobs, failed", admin, "/jobs?status=failed"),
        ("jobs, failed, one tenant", tenant, "/jobs?status=failed"),
        ("jobs, by domain", admin, "/jobs?domain=site123.test"),
        ("jobs, page in the middle", admin, f"/jobs?before={mid}"),
        ("jobs, rare error text, failed", admin, "/jobs?status=failed&error=certificate"),
        ("jobs, rare error text, any status", admin, "/jobs?error=certificate"),
        ("job page", admin, f"/jobs/{one}"),
        (
            "bulk confirm, rare error",
            admin,
            "/jobs/bulk?action=retry&status=failed&error=certificate",
        ),
        ("bulk confirm, all failed (150k)", admin, "/jobs/bulk?action=retry&status=failed"),
    ]
    print(f"{'page':36} {'median ms':>10} {'worst ms':>9}")
    async with aiohttp.ClientSession() as session:
        for name, scope, path in pages:
            scope_now[0] = scope
            times = []
            for i in range(repeat + 1):
                began = time.perf_counter()
                async with session.get(server.make_url(path)) as response:
                    await response.read()
                    assert response.status == 200, (path, response.status)
                if i:
                    times.append((time.perf_counter() - began) * 1000)
            print(f"{name:36} {statistics.median(times):10.1f} {max(times):9.1f}")
    await server.close()
    await pool.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="swdashbench-", dir="/tmp"))
    base.chmod(0o755)
    server = FastPostgres(base / "data", tcp=True)
    server.start()
    try:
        dsn = f"postgresql://postgres@127.0.0.1:{server.port}/postgres"
        await migrate(dsn, Settings(database_url=dsn))
        await fill(dsn, args.rows)
        await measure(dsn, args.repeat)
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
