"""Many small sites: sites/s with every URL stored, against ultimate-sitemap-parser.

    python -m tests.benchmarks.sites_bench [--sites 1000] [--workers 1|2] [--concurrency 20] [--peer]

N sites, each its own origin (127.0.x.y on one port, served by one aiohttp server in a child
process): robots.txt names /sitemap.xml, a urlset of --urls URLs with lastmod; every other
path answers 404 (so each scan also probes the well-known paths, as the peer does).

Ours: a private embedded PostgreSQL (fsync off, pg_stat_statements loaded), N `sitemap_scan`
rows in one INSERT, `--workers` real `sitemap-worker run` processes already idle and
listening; sites/s = N / (last finished_at - the INSERT's commit), by the database's clock.
Printed with it: URLs stored, jobs completed, the workers' peak RSS, CPU per site of
PostgreSQL (user + system of the postmaster, its live children and the ones it reaped, from
/proc), of the worker processes and of the sites' server,
transactions per site (pg_stat_database.xact_commit) and statements per site
(pg_stat_statements, top-level), with the costliest statements.

The peer (`--peer`, needs `pip install '.[bench]'`): usp's `sitemap_tree_for_homepage` on
each site from a pool of --peer-threads threads, in the same run against the same server;
its pages are kept in memory, nothing is stored. Without usp installed it says so and skips.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import asyncpg

from tests.support.fast_pg import FastPostgres
from tests.support.processes import WorkerProcess, process_env
from worker.migrate import migrate
from worker.settings import Settings

NS = "http://www.sitemaps.org/schemas/sitemap/0.9"
TICKS = os.sysconf("SC_CLK_TCK")


class StatsPostgres(FastPostgres):
    """The tests' fast server with pg_stat_statements loaded (it needs a preload)."""

    SERVER_SETTINGS = (
        *FastPostgres.SERVER_SETTINGS,
        "shared_preload_libraries=pg_stat_statements",
        "pg_stat_statements.track=top",
    )


def origins(sites: int, port: int) -> list[str]:
    """Distinct loopback addresses, one per site: the whole of 127/8 routes to lo."""
    return [f"http://127.0.{1 + i // 250}.{1 + i % 250}:{port}" for i in range(sites)]


# -- the sites, in a child process of their own ------------------------------------------


def serve(port: int, urls: int) -> None:
    """One asyncio process answering every site (the Host header names which)."""
    from aiohttp import web

    entries = "".join(
        f"<url><loc>http://HOST/page/{i}</loc><lastmod>2026-11-{i % 28 + 1:02d}</lastmod></url>\n"
        for i in range(urls)
    )
    template = (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<urlset xmlns="{NS}">\n{entries}</urlset>\n'
    )

    async def robots(request: web.Request) -> web.Response:
        return web.Response(text=f"Sitemap: http://{request.host}/sitemap.xml\n")

    async def sitemap(request: web.Request) -> web.Response:
        body = template.replace("HOST", request.host)
        return web.Response(text=body, content_type="application/xml")

    async def missing(request: web.Request) -> web.Response:
        return web.Response(status=404, text="not found")

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/robots.txt", robots)
        app.router.add_get("/sitemap.xml", sitemap)
        app.router.add_route("*", "/{tail:.*}", missing)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "0.0.0.0", port, backlog=1024).start()
        print("serving", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


async def start_sites(port: int, urls: int) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.benchmarks.sites_bench",
        "--serve",
        str(port),
        "--urls",
        str(urls),
        env=process_env({}),
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 20)
    if b"serving" not in line:
        raise RuntimeError("the site server did not start")
    return proc


# -- PostgreSQL's CPU, from /proc ---------------------------------------------------------


def _stat(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2 :].split()  # fields from 3 (state) on


def postgres_cpu(postmaster: int) -> float:
    """Seconds of CPU used so far by the server: the postmaster (with the children it has
    reaped) and every live child."""
    fields = _stat(postmaster)
    ticks = sum(int(fields[i]) for i in (11, 12, 13, 14))  # utime stime cutime cstime
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            child = _stat(int(entry.name))
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue
        if int(child[1]) == postmaster:  # ppid
            ticks += int(child[11]) + int(child[12])
    return ticks / TICKS


def process_cpu(pid: int) -> float:
    """Seconds of CPU (user + system) a live process has used so far."""
    fields = _stat(pid)
    return (int(fields[11]) + int(fields[12])) / TICKS


def postmaster_pid(data_dir: Path) -> int:
    return int((data_dir / "postmaster.pid").read_text().split()[0])


# -- ours ---------------------------------------------------------------------------------


async def run_ours(
    dsn: str, data_dir: Path, sites: list[str], workers: int, concurrency: int, server: int
) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn, statement_cache_size=0)
    try:
        await conn.execute("TRUNCATE jobs CASCADE")
        await conn.execute("VACUUM ANALYZE jobs")
        env = {
            "DATABASE_URL": dsn,
            "WORKER_ALLOW_PRIVATE_NETWORKS": "true",
            "WORKER_LOG_LEVEL": "INFO",
        }
        procs = [
            await WorkerProcess.start(env, "run", "--no-migrate", "--concurrency", str(concurrency))
            for _ in range(workers)
        ]
        try:
            for proc in procs:
                await proc.wait_ready(60)
            pid = postmaster_pid(data_dir)
            await conn.execute("SELECT pg_stat_statements_reset()")
            xacts = await conn.fetchval(
                "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
            )
            cpu = postgres_cpu(pid)
            worker_cpu = sum(process_cpu(p.proc.pid) for p in procs)
            server_cpu = process_cpu(server)
            inserted = await conn.fetchval(
                "INSERT INTO jobs (job_type, payload) SELECT 'sitemap_scan', "
                "json_build_object('domain', d)::jsonb FROM unnest($1::text[]) AS d "
                "RETURNING now()",
                sites,
            )
            polls = 0
            while True:
                polls += 1
                ended = await conn.fetchval(
                    "SELECT count(*) FROM jobs WHERE status IN ('completed', 'failed', 'cancelled')"
                )
                if ended >= len(sites):
                    break
                await asyncio.sleep(0.05)
            cpu = postgres_cpu(pid) - cpu
            worker_cpu = sum(process_cpu(p.proc.pid) for p in procs) - worker_cpu
            server_cpu = process_cpu(server) - server_cpu
            xacts = (
                await conn.fetchval(
                    "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
                )
                - xacts
                - polls  # the poll's own, one each
                - 2  # the INSERT, and this very statement
            )
            last = await conn.fetchval("SELECT max(finished_at) FROM jobs")
            statements = await conn.fetch(
                "SELECT calls, total_exec_time, left(regexp_replace(query, '\\s+', ' ', 'g'), 90)"
                " AS query FROM pg_stat_statements"
                " WHERE query !~* 'pg_stat_statements|pg_stat_database|FROM jobs WHERE status IN'"
                " ORDER BY total_exec_time DESC"
            )
        finally:
            for proc in procs:
                await proc.stop()
        completed = await conn.fetchval("SELECT count(*) FROM jobs WHERE status = 'completed'")
        stored = await conn.fetchval("SELECT count(*) FROM sitemap_urls")
        files = await conn.fetchval("SELECT count(*) FROM sitemap_files")
    finally:
        await conn.close()
    took = (last - inserted).total_seconds()
    peaks = [re.search(r"peak RSS (\d+) MiB", p.log()) for p in procs]
    return {
        "seconds": took,
        "rate": len(sites) / took,
        "completed": completed,
        "stored": stored,
        "files": files,
        "peak_rss": [int(m.group(1)) if m else None for m in peaks],
        "pg_cpu": cpu,
        "worker_cpu": worker_cpu,
        "server_cpu": server_cpu,
        "xacts": xacts,
        "statements": statements,
    }


# -- the peer -----------------------------------------------------------------------------


def run_peer(sites: list[str], threads: int) -> dict[str, Any] | None:
    try:
        from usp.tree import sitemap_tree_for_homepage
    except ImportError:
        return None
    logging.getLogger("usp").setLevel(logging.ERROR)

    def one(origin: str) -> int:
        tree = sitemap_tree_for_homepage(origin + "/")
        return sum(1 for _ in tree.all_pages())

    began = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        pages = list(pool.map(one, sites))
    took = time.perf_counter() - began
    return {"seconds": took, "rate": len(sites) / took, "pages": sum(pages)}


# -- the run ------------------------------------------------------------------------------


async def bench(args: argparse.Namespace) -> int:
    from worker.embedded_pg import free_tcp_port

    port = free_tcp_port()
    server = await start_sites(port, args.urls)
    try:
        sites = origins(args.sites, port)
        with tempfile.TemporaryDirectory(prefix="sites-bench-") as tmp:
            os.chmod(tmp, 0o755)  # the server may run as another account (root cannot)
            pg = StatsPostgres(Path(tmp) / "pg", tcp=True)
            pg.start()
            try:
                dsn = pg.dsn
                await migrate(dsn, Settings(database_url="unused"))
                conn = await asyncpg.connect(dsn)
                await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
                await conn.close()
                ours = await run_ours(
                    dsn, pg.data_dir, sites, args.workers, args.concurrency, server.pid
                )
            finally:
                pg.stop()
        peer = await asyncio.to_thread(run_peer, sites, args.peer_threads) if args.peer else None
    finally:
        server.terminate()
        await server.wait()
    report(args, ours, peer)
    expected = args.sites * args.urls
    return 0 if ours["completed"] == args.sites and ours["stored"] == expected else 1


def report(args: argparse.Namespace, ours: dict[str, Any], peer: dict[str, Any] | None) -> None:
    n = args.sites
    calls = sum(r["calls"] for r in ours["statements"])
    print(
        f"sites: {n:,} origins on 127.0.x.y, one aiohttp process; robots.txt -> /sitemap.xml "
        f"({args.urls:,} URLs with lastmod), 404 elsewhere"
    )
    print(
        f"ours:  {ours['rate']:.1f} sites/s ({n:,} in {ours['seconds']:.2f} s), "
        f"{args.workers} process(es) x --concurrency {args.concurrency}; "
        f"jobs completed {ours['completed']:,}/{n:,}; URLs stored {ours['stored']:,}/"
        f"{n * args.urls:,}; sitemap_files rows {ours['files']:,}; "
        f"peak RSS {', '.join(f'{p} MiB' for p in ours['peak_rss'])}"
    )
    print(
        f"       PostgreSQL CPU {ours['pg_cpu']:.1f} s = {ours['pg_cpu'] / n * 1000:.1f} ms/site; "
        f"{ours['xacts'] / n:.1f} transactions/site; {calls / n:.1f} statements/site "
        f"(pg_stat_statements, top level)"
    )
    print(
        f"       CPU per site: PostgreSQL {ours['pg_cpu'] / n * 1000:.1f} ms, worker process(es) "
        f"{ours['worker_cpu'] / n * 1000:.1f} ms, the sites' server "
        f"{ours['server_cpu'] / n * 1000:.1f} ms; load average at the end "
        f"{os.getloadavg()[0]:.2f}"
    )
    for row in ours["statements"][: args.top]:
        print(
            f"       {row['calls'] / n:7.2f}/site {row['total_exec_time'] / n:6.3f} ms/site  "
            f"{row['query']}"
        )
    if not args.peer:
        return
    if peer is None:
        print("peer:  skipped: ultimate-sitemap-parser is not installed (pip install '.[bench]')")
        return
    print(
        f"peer:  ultimate-sitemap-parser, sitemap_tree_for_homepage, {args.peer_threads} threads: "
        f"{peer['rate']:.1f} sites/s ({n:,} in {peer['seconds']:.2f} s), "
        f"{peer['pages']:,} pages in memory, nothing stored"
    )
    print(f"ratio: ours {ours['rate'] / peer['rate']:.2f}x the peer's sites/s")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks.sites_bench")
    parser.add_argument("--sites", type=int, default=1000)
    parser.add_argument("--urls", type=int, default=1000, help="URLs in each site's sitemap")
    parser.add_argument("--workers", type=int, default=1, help="worker processes")
    parser.add_argument("--concurrency", type=int, default=20, help="jobs per worker process")
    parser.add_argument("--peer", action="store_true", help="also run ultimate-sitemap-parser")
    parser.add_argument("--peer-threads", type=int, default=20)
    parser.add_argument("--top", type=int, default=8, help="costliest statements shown")
    parser.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main() -> int:
    args = parse_args()
    if args.serve:
        serve(args.serve, args.urls)
        return 0
    return asyncio.run(bench(args))


if __name__ == "__main__":
    sys.exit(main())
