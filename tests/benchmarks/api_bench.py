"""HTTP API figures on a big table: `python -m tests.benchmarks.api_bench`.

Builds, in a PostgreSQL of its own (tests/support/fast_pg, deleted afterwards), a jobs table of
5,000,000 rows (100 tenants, 1% failed, 0.1% pending) by INSERT ... SELECT generate_series, and
one scan job with 1,000,000 URL rows interleaved by id with another job's 1,000,000 (as two
scans running at once store them). Then runs the real `sitemap-worker serve` process against it
and measures, over HTTP on 127.0.0.1: the job list (first page, a deep keyset page, a status
filter, a tenant key), one job's status, the sitemap tree, and the CSV and NDJSON export of the
1M-URL job (rows/s, and the server's peak RSS before and after, from /proc VmHWM).

Options: --jobs N, --urls N, --repeat N (requests per figure), --keep-index (do not add the
(job_id, sitemap_file_id, id) index on sitemap_urls_stored if the schema lacks it: shows the
export without it).
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

from tests.support.fast_pg import FastPostgres
from worker.api.keys import create_key
from worker.embedded_pg import free_tcp_port
from worker.migrate import migrate
from worker.settings import Settings

CHUNK = 500_000
KEYSET_INDEX = (
    "CREATE INDEX sitemap_urls_stored_file_idx ON sitemap_urls_stored (job_id, sitemap_file_id, id)"
)


def say(text: str) -> None:
    print(text, flush=True)


async def build_jobs(conn: asyncpg.Connection, total: int) -> None:
    began = time.perf_counter()
    for start in range(1, total + 1, CHUNK):
        end = min(start + CHUNK - 1, total)
        await conn.execute(
            """
            INSERT INTO jobs (job_type, payload, status, progress, attempts, created_at,
                              started_at, finished_at, error)
            SELECT 'sitemap_scan',
                   jsonb_build_object('domain', 'site' || (g % 20000) || '.example',
                                      'tenant_id', 'tenant-' || (g % 100)),
                   s.status, CASE WHEN s.status = 'pending' THEN 0 ELSE 1 END,
                   CASE WHEN s.status = 'pending' THEN 0 ELSE 1 END,
                   t, CASE WHEN s.status <> 'pending' THEN t END,
                   CASE WHEN s.status <> 'pending' THEN t + interval '3 s' END,
                   CASE WHEN s.status = 'failed' THEN 'HTTP 404 on every sitemap' END
              FROM generate_series($1::bigint, $2::bigint) g,
                   LATERAL (SELECT CASE WHEN g % 100 = 0 THEN 'failed'
                                        WHEN g % 1000 = 1 THEN 'pending'
                                        ELSE 'completed' END AS status,
                                   now() - make_interval(secs => ($3 - g)::double precision)
                                       AS t) s
            """,
            start,
            end,
            total,
        )
        say(f"  jobs: {end:,} rows ({time.perf_counter() - began:.0f} s)")


async def build_urls(conn: asyncpg.Connection, urls: int) -> int:
    """The export's job (tenant-7) and a neighbour whose rows interleave with its ids."""
    job, other = [
        await conn.fetchval(
            "INSERT INTO jobs (job_type, payload, status) VALUES ('sitemap_scan',"
            " jsonb_build_object('domain', $1::text, 'tenant_id', 'tenant-7'), 'completed')"
            " RETURNING id",
            domain,
        )
        for domain in ("big.example", "neighbour.example")
    ]
    files = [
        await conn.fetchval(
            "INSERT INTO sitemap_files (job_id, url, status, kind) VALUES ($1, $2, 'ok',"
            " 'urlset') RETURNING id",
            j,
            f"https://{d}/sitemap.xml",
        )
        for j, d in ((job, "big.example"), (other, "neighbour.example"))
    ]
    began = time.perf_counter()
    for start in range(1, 2 * urls + 1, CHUNK):
        end = min(start + CHUNK - 1, 2 * urls)
        await conn.execute(
            """
            INSERT INTO sitemap_urls_stored (job_id, sitemap_file_id, loc, lastmod, changefreq,
                                             priority, images, alternates)
            SELECT CASE WHEN g % 2 = 0 THEN $3::bigint ELSE $4::bigint END,
                   CASE WHEN g % 2 = 0 THEN $5::bigint ELSE $6::bigint END,
                   'https://big.example/category-' || (g % 97) || '/product-' || g || '?ref=s',
                   timestamptz '2026-11-01' + make_interval(mins => (g % 40000)::int),
                   'weekly', 0.5,
                   CASE WHEN g % 10 = 0 THEN jsonb_build_array(jsonb_build_object(
                       'loc', 'https://img.big.example/' || g || '.jpg',
                       'title', 'Product ' || g)) END,
                   CASE WHEN g % 4 = 0 THEN jsonb_build_array(jsonb_build_object(
                       'hreflang', 'de', 'href', 'https://big.example/de/' || g)) END
              FROM generate_series($1::bigint, $2::bigint) g
            """,
            start,
            end,
            job,
            other,
            files[0],
            files[1],
        )
        say(f"  urls: {end:,} rows ({time.perf_counter() - began:.0f} s)")
    return job


async def timed(http: aiohttp.ClientSession, url: str, key: str, repeat: int) -> str:
    """Median and worst of `repeat` GETs, in ms (each body read whole)."""
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        async with http.get(url, headers={"Authorization": f"Bearer {key}"}) as resp:
            await resp.read()
            assert resp.status == 200, (url, resp.status, await resp.text())
        times.append((time.perf_counter() - began) * 1000)
    return f"{statistics.median(times):7.1f} ms median, {max(times):7.1f} ms worst"


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def export(http: aiohttp.ClientSession, url: str, key: str) -> tuple[int, int, float]:
    """(lines, bytes, seconds) of one streamed export, read in 64 KiB chunks."""
    lines = size = 0
    began = time.perf_counter()
    async with http.get(url, headers={"Authorization": f"Bearer {key}"}) as resp:
        assert resp.status == 200, resp.status
        async for chunk in resp.content.iter_chunked(65536):
            size += len(chunk)
            lines += chunk.count(b"\n")
    return lines, size, time.perf_counter() - began


async def wait_healthy(base: str, proc: asyncio.subprocess.Process) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(300):
            if proc.returncode is not None:
                raise SystemExit(f"serve exited with {proc.returncode}")
            try:
                async with http.get(f"{base}/api/v3/health") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)  # a process starting up: nothing to await but its port
    raise SystemExit("serve did not answer /api/v3/health within 30 s")


async def measure(dsn: str, args: argparse.Namespace) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SET maintenance_work_mem = '256MB'")
        say(f"building {args.jobs:,} jobs and 2 x {args.urls:,} URL rows ...")
        began = time.perf_counter()
        await build_jobs(conn, args.jobs)
        job = await build_urls(conn, args.urls)
        has_index = await conn.fetchval(
            "SELECT count(*) FROM pg_indexes WHERE tablename = 'sitemap_urls_stored'"
            " AND indexdef LIKE '%(job_id, sitemap_file_id, id)%'"
        )
        if not has_index and not args.keep_index:
            say(f"  schema has no per-file keyset index: adding it ({KEYSET_INDEX})")
            await conn.execute(KEYSET_INDEX)
        await conn.execute("VACUUM ANALYZE jobs")
        await conn.execute("VACUUM ANALYZE sitemap_urls_stored")
        say(f"built in {time.perf_counter() - began:.0f} s")
        async with conn.transaction():
            tenant_key = (await create_key(conn, "tenant", "tenant-7", "bench")).key
            admin_key = (await create_key(conn, "admin", None, "bench")).key
        deep = await conn.fetchval("SELECT max(id) / 2 FROM jobs")
        failed_deep = await conn.fetchval(
            "SELECT id FROM jobs WHERE status = 'failed' AND id < $1 ORDER BY id DESC LIMIT 1",
            deep,
        )
    finally:
        await conn.close()
    port = free_tcp_port()
    env = {**os.environ, "DATABASE_URL": dsn, "WORKER_LOG_LEVEL": "WARNING"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "worker", "serve", "--host", "127.0.0.1", "--port", str(port),
        env=env,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        await wait_healthy(base, proc)
        await run_figures(base, proc.pid, job, deep, failed_deep, tenant_key, admin_key, args)
    finally:
        proc.terminate()
        await proc.wait()


async def run_figures(
    base: str,
    pid: int,
    job: int,
    deep: int,
    failed_deep: int,
    tenant_key: str,
    admin_key: str,
    args: argparse.Namespace,
) -> None:
    n = args.repeat
    say(f"\nHTTP on 127.0.0.1, {args.jobs:,} jobs, {n} requests per line (after one warm-up)")
    cases = [
        ("GET /api/v3/jobs (admin, first page of 50)", "/api/v3/jobs", admin_key),
        (f"GET /api/v3/jobs?cursor={deep} (admin, deep page)", f"/api/v3/jobs?cursor={deep}",
         admin_key),
        ("GET /api/v3/jobs?status=failed (admin)", "/api/v3/jobs?status=failed", admin_key),
        ("GET /api/v3/jobs?status=failed&cursor=<deep> (admin)",
         f"/api/v3/jobs?status=failed&cursor={failed_deep}", admin_key),
        ("GET /api/v3/jobs?status=pending (admin, 0.1% of rows)",
         "/api/v3/jobs?status=pending", admin_key),
        ("GET /api/v3/jobs (tenant key, 1% of rows)", "/api/v3/jobs", tenant_key),
        (f"GET /api/v3/jobs?cursor={deep} (tenant key)", f"/api/v3/jobs?cursor={deep}",
         tenant_key),
        ("GET /api/v3/jobs?status=failed (tenant key)", "/api/v3/jobs?status=failed",
         tenant_key),
        (f"GET /api/v3/sitemap/status/{deep} (admin)", f"/api/v3/sitemap/status/{deep}",
         admin_key),
        (f"GET /api/v3/sitemap/jobs/{job}/sitemaps (tenant key)",
         f"/api/v3/sitemap/jobs/{job}/sitemaps", tenant_key),
        (f"GET /api/v3/sitemap/jobs/{job}/urls?limit=1000 (tenant key)",
         f"/api/v3/sitemap/jobs/{job}/urls?limit=1000", tenant_key),
    ]  # fmt: skip
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as http:
        for label, path, key in cases:
            await timed(http, base + path, key, 1)
            say(f"  {label:<58} {await timed(http, base + path, key, n)}")
        say(f"\nserver peak RSS before the exports: {peak_rss_mib(pid):.0f} MiB")
        for fmt in ("csv", "ndjson"):
            url = f"{base}/api/v3/sitemap/jobs/{job}/urls?format={fmt}"
            lines, size, seconds = await export(http, url, tenant_key)
            rows = lines - 1 if fmt == "csv" else lines
            say(
                f"  export {fmt:<6} {rows:,} rows, {size / 2**20:,.0f} MiB in {seconds:.1f} s:"
                f" {rows / seconds:,.0f} rows/s; server peak RSS now {peak_rss_mib(pid):.0f} MiB"
            )
            assert rows == args.urls, (rows, args.urls)


async def main(args: argparse.Namespace) -> None:
    base = Path(tempfile.mkdtemp(prefix="api-bench-", dir="/tmp"))
    base.chmod(0o755)
    server = FastPostgres(base / "data", tcp=True)
    server.start()
    try:
        admin = await asyncpg.connect(server.dsn)
        await admin.execute("CREATE DATABASE api_bench")
        await admin.close()
        dsn = f"postgresql://postgres@127.0.0.1:{server.port}/api_bench"
        await migrate(dsn, Settings(database_url=dsn))
        await measure(dsn, args)
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks.api_bench")
    parser.add_argument("--jobs", type=int, default=5_000_000)
    parser.add_argument("--urls", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--keep-index", action="store_true", help="never add the keyset index")
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
