"""Domain endpoint figures (issue 19): `python -m tests.benchmarks.domains_api_bench`.

Builds, in a PostgreSQL of its own (tests/support/fast_pg, deleted afterwards), a domains
table of 100,000 rows (100 tenants, 10% watched) and one domain (tenant-7's big.example) with
2,000 ended scans, 200,000 url_changes rows and a current set of 100,000 URLs, all by INSERT
... SELECT generate_series. Then runs the real `sitemap-worker serve` process against it and
measures over HTTP on 127.0.0.1 the domain list (first and deep keyset pages, a filter, a
tenant key), one domain with its history, its changes (first page, since a job, one kind),
its current URLs, and PUT of an interval; and the dashboard's two Domains pages.

Options: --domains N, --scans N, --changes N, --urls N, --repeat N, --without-name-index
(drop migration 0018's index in the admin list's order, to see what it buys).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import asyncpg

from tests.benchmarks.api_bench import say, timed, wait_healthy
from tests.support.fast_pg import FastPostgres
from worker.api.domain_ops import encode_cursor
from worker.api.keys import create_key
from worker.embedded_pg import free_tcp_port
from worker.migrate import migrate
from worker.settings import Settings

NAME_INDEX = "domains_name_idx"


async def build(conn: asyncpg.Connection, args: argparse.Namespace) -> tuple[int, str]:
    """The tables; (a job id in the middle of big.example's history, a deep list cursor)."""
    await conn.execute(
        """
        INSERT INTO domains (tenant_id, domain, url_count, sitemap_count, last_status,
                             last_scanned_at, rescan_interval, next_scan_at)
        SELECT 'tenant-' || (g % 100), 'site' || g || '.example', g % 5000, 1 + g % 7,
               'completed', now() - make_interval(secs => g),
               CASE WHEN g % 10 = 0 THEN interval '1 day' END,
               CASE WHEN g % 10 = 0 THEN now() + make_interval(secs => g) END
          FROM generate_series(1, $1::int) g
        """,
        args.domains,
    )
    jobs = await conn.fetch(
        "INSERT INTO jobs (job_type, payload, status, finished_at)"
        ' SELECT \'sitemap_scan\', \'{"domain": "big.example", "tenant_id": "tenant-7"}\','
        " 'completed', now() FROM generate_series(1, $1::int) RETURNING id",
        args.scans,
    )
    ids = [r["id"] for r in jobs]
    last = ids[-1]
    domain_id = await conn.fetchval(
        "INSERT INTO domains (tenant_id, domain, first_job_id, last_job_id, last_status,"
        " last_completed_job_id, url_count, sitemap_count) VALUES ('tenant-7', 'big.example',"
        " $1, $2, 'completed', $2, $3, 10) RETURNING id",
        ids[0],
        last,
        args.urls,
    )
    await conn.execute(
        "INSERT INTO domain_scans (job_id, domain_id, status, url_count, added, removed,"
        " changed, complete) SELECT j, $1, 'completed', $2, 100, 50, 20, true"
        " FROM unnest($3::bigint[]) j",
        domain_id,
        args.urls,
        ids,
    )
    await conn.execute(
        """
        INSERT INTO url_changes (domain_id, job_id, change, loc, detected_at)
        SELECT $1, ($3::bigint[])[1 + (g * cardinality($3::bigint[])) / ($2 + 1)],
               (ARRAY['added', 'removed', 'changed'])[1 + g % 3],
               'https://big.example/p/' || g, now() - make_interval(secs => $2 - g)
          FROM generate_series(1, $2::int) g
        """,
        domain_id,
        args.changes,
        ids,
    )
    file_id = await conn.fetchval(
        "INSERT INTO sitemap_files (job_id, url, status, kind) VALUES ($1,"
        " 'https://big.example/sitemap.xml', 'ok', 'urlset') RETURNING id",
        last,
    )
    await conn.execute(
        "INSERT INTO sitemap_urls (job_id, sitemap_file_id, loc, lastmod)"
        " SELECT $1, $2, 'https://big.example/p/' || g, now() FROM generate_series(1, $3::int) g",
        last,
        file_id,
        args.urls,
    )
    if args.without_name_index:
        await conn.execute(f"DROP INDEX {NAME_INDEX}")
    for table in ("domains", "domain_scans", "url_changes", "sitemap_urls_stored", "jobs"):
        await conn.execute(f"VACUUM ANALYZE {table}")
    deep = await conn.fetchrow(
        "SELECT domain, id FROM domains ORDER BY domain, id OFFSET $1 LIMIT 1", args.domains // 2
    )
    return ids[len(ids) // 2], encode_cursor(deep["domain"], deep["id"])


async def timed_put(http: aiohttp.ClientSession, url: str, key: str, repeat: int) -> str:
    times = []
    for i in range(repeat):
        body = {"rescan_interval": 3600 + i * 60}
        began = time.perf_counter()
        async with http.put(url, json=body, headers={"Authorization": f"Bearer {key}"}) as r:
            await r.read()
            assert r.status == 200, (url, r.status)
        times.append((time.perf_counter() - began) * 1000)
    return f"{statistics.median(times):7.1f} ms median, {max(times):7.1f} ms worst"


async def measure(dsn: str, args: argparse.Namespace) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        say(f"building {args.domains:,} domains, {args.scans:,} scans, {args.changes:,} changes,"
            f" {args.urls:,} current URLs ...")  # fmt: skip
        began = time.perf_counter()
        middle_job, deep_cursor = await build(conn, args)
        say(f"built in {time.perf_counter() - began:.0f} s")
        async with conn.transaction():
            tenant_key = (await create_key(conn, "tenant", "tenant-7", "bench")).key
            admin_key = (await create_key(conn, "admin", None, "bench")).key
    finally:
        await conn.close()
    port = free_tcp_port()
    env = {**os.environ, "DATABASE_URL": dsn, "WORKER_LOG_LEVEL": "WARNING"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "worker", "serve", "--host", "127.0.0.1", "--port", str(port),
        env=env,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    d = "/api/v3/domains"
    cases = [
        ("GET /domains (admin, first page of 50)", d, admin_key),
        ("GET /domains?cursor=<middle> (admin, deep page)", f"{d}?cursor={deep_cursor}",
         admin_key),
        ("GET /domains?watched=true (admin)", f"{d}?watched=true", admin_key),
        ("GET /domains (tenant key, 1% of rows)", d, tenant_key),
        ("GET /domains/big.example (50 of its scans)", f"{d}/big.example", tenant_key),
        ("GET /domains/big.example?scans=500", f"{d}/big.example?scans=500", tenant_key),
        ("GET .../changes?limit=1000 (first page)", f"{d}/big.example/changes?limit=1000",
         tenant_key),
        ("GET .../changes?since=<middle job>&limit=1000",
         f"{d}/big.example/changes?since={middle_job}&limit=1000", tenant_key),
        ("GET .../changes?change=removed&limit=1000",
         f"{d}/big.example/changes?change=removed&limit=1000", tenant_key),
        ("GET .../urls?limit=1000", f"{d}/big.example/urls?limit=1000", tenant_key),
        ("dashboard /domains (admin)", "/domains", admin_key),
        ("dashboard /domains (tenant key)", "/domains", tenant_key),
        ("dashboard /domains/big.example (100 scans, 50 changes)", "/domains/big.example",
         tenant_key),
    ]  # fmt: skip
    try:
        await wait_healthy(base, proc)
        n = args.repeat
        say(f"\nHTTP on 127.0.0.1, {n} requests per line (after one warm-up)")
        async with aiohttp.ClientSession() as http:
            for label, path, key in cases:
                await timed(http, base + path, key, 1)
                say(f"  {label:<54} {await timed(http, base + path, key, n)}")
            put = await timed_put(http, f"{base}{d}/big.example", tenant_key, n)
            say(f"  {'PUT /domains/big.example (rescan_interval)':<54} {put}")
    finally:
        proc.terminate()
        await proc.wait()


async def main(args: argparse.Namespace) -> None:
    base = Path(tempfile.mkdtemp(prefix="domains-bench-", dir="/tmp"))
    base.chmod(0o755)
    server = FastPostgres(base / "data", tcp=True)
    server.start()
    try:
        admin = await asyncpg.connect(server.dsn)
        await admin.execute("CREATE DATABASE domains_bench")
        await admin.close()
        dsn = f"postgresql://postgres@127.0.0.1:{server.port}/domains_bench"
        await migrate(dsn, Settings(database_url=dsn))
        await measure(dsn, args)
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks.domains_api_bench")
    parser.add_argument("--domains", type=int, default=100_000)
    parser.add_argument("--scans", type=int, default=2_000)
    parser.add_argument("--changes", type=int, default=200_000)
    parser.add_argument("--urls", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument(
        "--without-name-index",
        action="store_true",
        help=f"drop {NAME_INDEX} (migration 0018: the admin list's order)",
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
