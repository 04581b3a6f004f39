"""Re-scans of watched domains (issue 19): `python -m tests.benchmarks.rescan_bench`.

In a PostgreSQL of its own (tests/support/fast_pg, deleted afterwards), real
`sitemap-worker run` processes scan sites served from 127.0.0.1 by tests/support/conditional:

1. an index and 10 files of 50,000 URLs with ETag and Last-Modified: a first scan, then a
   re-scan with nothing changed (target: at most 5% of the first scan's time, no sitemap
   body downloaded, URL rows added at most the number of files plus a few);
2. the same site from a server that sends no validators (target: at most 25%, nothing parsed
   or stored again);
3. one file changed, +100 URLs, -50, 20 lastmods moved (target: the result says exactly
   that, and storage grows by about that file);
4. 1,000 domains with a one-minute interval and 4 workers for five minutes (--minutes): every
   domain scanned once per due time, no duplicate, no scan of a domain while another runs.

Times are the job's finished_at - started_at.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import shutil
import socket
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

import asyncpg
from aiohttp import web

from tests.support.conditional import ConditionalSite, Validators
from tests.support.fast_pg import FastPostgres
from tests.support.processes import WorkerProcess
from worker.migrate import migrate
from worker.settings import Settings

NS = "http://www.sitemaps.org/schemas/sitemap/0.9"


def part(f: int, n: int, changed: bool = False) -> bytes:
    """File f of the site; `changed`: 50 URLs gone, 20 lastmods moved, 100 new."""
    rows = [
        (f"https://shop.example/c{f}/product-{i}?ref=s{i % 7}", f"2026-11-{i % 28 + 1:02d}")
        for i in range(n)
    ]
    if changed:
        rows = rows[50:]
        rows[:20] = [(loc, "2026-12-01") for loc, _ in rows[:20]]
        rows += [(f"https://shop.example/c{f}/new-{i}", "2026-12-01") for i in range(100)]
    body = "".join(f"<url><loc>{loc}</loc><lastmod>{m}</lastmod></url>\n" for loc, m in rows)
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<urlset xmlns="{NS}">\n{body}</urlset>\n'.encode()
    )


def build(site: ConditionalSite, files: int, per_file: int) -> None:
    o = site.origin
    site.set("/robots.txt", f"Sitemap: {o}/sitemap_index.xml\n")
    entries = "".join(f"<sitemap><loc>{o}/part-{f}.xml</loc></sitemap>" for f in range(files))
    site.set("/sitemap_index.xml", f'<sitemapindex xmlns="{NS}">{entries}</sitemapindex>')
    for f in range(files):
        site.set(f"/part-{f}.xml", part(f, per_file))


async def burst(dsn: str) -> None:
    env = {"DATABASE_URL": dsn, "WORKER_ALLOW_PRIVATE_NETWORKS": "true"}
    proc = await WorkerProcess.start(env, "run", "--burst", "--no-migrate", "--concurrency", "1")
    code = await proc.wait(timeout=None)
    assert code == 0, proc.log()


async def scan(conn: asyncpg.Connection, dsn: str, site: ConditionalSite) -> dict[str, object]:
    site.answers.clear()
    before = await storage(conn)
    job_id = await conn.fetchval(
        "INSERT INTO jobs (job_type, payload) VALUES ('sitemap_scan', $1::jsonb) RETURNING id",
        json.dumps({"domain": site.origin}),
    )
    await burst(dsn)
    job = await conn.fetchrow(
        "SELECT status, result::text AS result,"
        " extract(epoch FROM finished_at - started_at)::float AS took FROM jobs WHERE id = $1",
        job_id,
    )
    after = await storage(conn)
    sitemaps = {k: n for k, n in site.answers.items() if k[0] != "/robots.txt"}
    return {
        "id": job_id,
        "status": job["status"],
        "took": job["took"],
        "result": json.loads(job["result"]),
        "bodies": sum(n for (_, s), n in sitemaps.items() if s == 200),
        "not_modified": sum(n for (_, s), n in sitemaps.items() if s == 304),
        "url_rows": after[0] - before[0],
        "file_rows": after[1] - before[1],
        "bytes": after[2] - before[2],
        "change_rows": after[3] - before[3],
        "history_rows": after[4] - before[4],
        "missing_paths": await conn.fetchval(
            "SELECT count(*) FROM sitemap_files WHERE job_id = $1 AND source = 'well_known'"
            " AND http_status = 404",
            job_id,
        ),
    }


async def storage(conn: asyncpg.Connection) -> tuple[int, int, int, int, int]:
    return (
        await conn.fetchval("SELECT count(*) FROM sitemap_urls_stored"),
        await conn.fetchval("SELECT count(*) FROM sitemap_files"),
        await conn.fetchval("SELECT pg_total_relation_size('sitemap_urls_stored')"),
        await conn.fetchval("SELECT count(*) FROM url_changes"),
        await conn.fetchval(
            "SELECT (SELECT count(*) FROM domain_scans) + (SELECT count(*) FROM domain_scan_jobs)"
        ),
    )


def line(name: str, s: dict[str, object], first: dict[str, object] | None = None) -> None:
    r = s["result"]
    assert isinstance(r, dict)
    share = f" = {100 * s['took'] / first['took']:.1f}% of the first" if first else ""  # type: ignore[operator]
    print(
        f"  {name:<22} {s['status']}, {s['took']:.2f} s{share}; sitemap bodies 200: {s['bodies']},"
        f" 304: {s['not_modified']}; rows added: {s['url_rows']:,} URL, {s['file_rows']} file"
        f" (of them {s['missing_paths']} well-known paths missing), {s['change_rows']:,} change,"
        f" {s['history_rows']} history"
        f" ({int(s['bytes']) / 2**20:+.1f} MiB); url_count {r['url_count']:,};"  # type: ignore[call-overload]
        f" added {r['added']}, removed {r['removed']}, changed {r['changed']}"
    )


async def site_targets(dsn: str, files: int, per_file: int) -> bool:
    ok = True
    conn = await asyncpg.connect(dsn)
    try:
        modes: tuple[Validators, ...] = ("proper", "none")
        for validators in modes:
            async with ConditionalSite(validators) as site:
                build(site, files, per_file)
                print(f"site: index + {files} x {per_file:,} URLs, validators: {validators}")
                first = await scan(conn, dsn, site)
                line("first scan", first)
                again = await scan(conn, dsn, site)
                line("nothing changed", again, first)
                share = again["took"] / first["took"]  # type: ignore[operator]
                if validators == "proper":
                    met = share <= 0.05 and again["bodies"] == 0
                    # every row the re-scan added but the well-known paths' (one per path the
                    # site lacks, written by every scan): sitemap files, history, changes, URLs
                    rows = sum(
                        int(again[k])  # type: ignore[call-overload]
                        for k in ("url_rows", "file_rows", "change_rows", "history_rows")
                    ) - int(again["missing_paths"])  # type: ignore[call-overload]
                    print(f"  rows added but the missing well-known paths': {rows}")
                    met = met and rows <= files + 5
                    print(
                        f"  target: <= 5%, no body, rows <= files + a few: {'met' if met else 'MISSED'}"
                    )
                    ok &= met
                    site.set("/part-3.xml", part(3, per_file, changed=True))
                    changed = await scan(conn, dsn, site)
                    line("one file changed", changed, first)
                    r = changed["result"]
                    exact = (r["added"], r["removed"], r["changed"]) == (100, 50, 20)  # type: ignore[index]
                    grew = changed["url_rows"] == per_file + 50  # the changed file, read again
                    print(
                        f"  target: added 100, removed 50, changed 20: {'met' if exact else 'MISSED'};"
                        f" storage grew by that file ({per_file + 50:,} rows):"
                        f" {'met' if grew else 'MISSED'}"
                    )
                    ok &= exact and grew
                else:
                    met = share <= 0.25 and again["url_rows"] == 0
                    print(
                        f"  target: <= 25%, nothing parsed or stored again: {'met' if met else 'MISSED'}"
                    )
                    ok &= met
        page = await timed_page(conn)
        print(f"  URL page (1,000 rows) of the last scan, through sitemap_worker_job_urls: {page}")
    finally:
        await conn.close()
    return ok


VARIANTS = {
    "(job_id, sitemap_file_id, id)": "sitemap_urls_stored (job_id, sitemap_file_id, id)",
    "(job_id, sitemap_file_id)": "sitemap_urls_stored (job_id, sitemap_file_id)",
}


async def index_cost(dsn: str, files: int, per_file: int, rounds: int) -> None:
    """First scans with migration 0016's per-file index against 0007's, alternating, each on
    empty tables: what the wider index costs the scan's COPY."""
    conn = await asyncpg.connect(dsn)
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    try:
        for _ in range(rounds):
            for name, columns in VARIANTS.items():
                await conn.execute("TRUNCATE jobs CASCADE; TRUNCATE domains CASCADE")
                await conn.execute("DROP INDEX sitemap_urls_stored_file_idx")
                await conn.execute(f"CREATE INDEX sitemap_urls_stored_file_idx ON {columns}")
                async with ConditionalSite() as site:
                    build(site, files, per_file)
                    first = await scan(conn, dsn, site)
                times[name].append(float(first["took"]))  # type: ignore[arg-type]
        await conn.execute("DROP INDEX sitemap_urls_stored_file_idx")
        await conn.execute(
            f"CREATE INDEX sitemap_urls_stored_file_idx ON {VARIANTS['(job_id, sitemap_file_id, id)']}"
        )
    finally:
        await conn.close()
    print(f"index cost: first scan of {files} x {per_file:,} URLs, {rounds} rounds, alternating")
    for name, took in times.items():
        took.sort()
        print(
            f"  {name:<30} median {took[len(took) // 2]:.2f} s"
            f" ({', '.join(f'{t:.2f}' for t in took)})"
        )


async def timed_page(conn: asyncpg.Connection) -> str:
    job = await conn.fetchval("SELECT max(id) FROM jobs")
    times = []
    after = 0
    for _ in range(20):
        began = time.perf_counter()
        rows = await conn.fetch("SELECT id FROM sitemap_worker_job_urls($1, $2, 1000)", job, after)
        times.append(time.perf_counter() - began)
        after = rows[-1]["id"] if rows else 0
    times.sort()
    return f"median {1000 * times[10]:.1f} ms, worst {1000 * times[-1]:.1f} ms (20 pages in a row)"


async def schedule_target(dsn: str, domains: int, workers: int, minutes: float) -> bool:
    """`domains` tiny sites, one port each, a one-minute interval, `workers` processes."""
    app = web.Application()
    hits = {"n": 0}

    async def handle(request: web.Request) -> web.Response:
        hits["n"] += 1
        port = request.url.port
        if request.path == "/robots.txt":
            return web.Response(text=f"Sitemap: http://127.0.0.1:{port}/s.xml\n")
        if request.path == "/s.xml":
            body = "".join(f"<url><loc>https://d{port}.example/{i}</loc></url>" for i in range(10))
            return web.Response(
                text=f'<urlset xmlns="{NS}">{body}</urlset>',
                headers={"ETag": f'"{port}"'},
                status=304 if request.headers.get("If-None-Match") == f'"{port}"' else 200,
            )
        return web.Response(status=404)

    app.router.add_route("GET", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    ports = []
    for _ in range(domains):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        ports.append(sock.getsockname()[1])
        await web.SockSite(runner, sock).start()
    conn = await asyncpg.connect(dsn)
    procs: list[WorkerProcess] = []
    try:
        await conn.executemany(
            "INSERT INTO domains (domain, rescan_interval, scan_payload)"
            " VALUES ($1, interval '1 minute', $2::jsonb)",
            [(f"127.0.0.1:{p}", json.dumps({"domain": f"http://127.0.0.1:{p}"})) for p in ports],
        )
        began = await conn.fetchval("SELECT now()")
        env = {
            "DATABASE_URL": dsn,
            "WORKER_ALLOW_PRIVATE_NETWORKS": "true",
            "WORKER_LOG_LEVEL": "WARNING",
        }
        for _ in range(workers):
            procs.append(
                await WorkerProcess.start(env, "run", "--no-migrate", "--concurrency", "8")
            )
        await asyncio.sleep(minutes * 60)  # the measured period itself
        ended = await conn.fetchval("SELECT now()")
    finally:
        await asyncio.gather(*(p.stop() for p in procs))
        await runner.cleanup()
    try:
        return await schedule_report(conn, began, ended, domains, workers, minutes)
    finally:
        await conn.close()


async def schedule_report(
    conn: asyncpg.Connection,
    began: datetime,
    ended: datetime,
    domains: int,
    workers: int,
    minutes: float,
) -> bool:
    rows = await conn.fetch(
        "SELECT l.domain_id, j.id, j.status, j.created_at, j.started_at, j.finished_at"
        "  FROM domain_scan_jobs l JOIN jobs j ON j.id = l.job_id ORDER BY l.domain_id, j.id"
    )
    by_domain: dict[int, list[asyncpg.Record]] = {}
    for r in rows:
        by_domain.setdefault(r["domain_id"], []).append(r)
    overlaps = early = 0
    late: list[float] = []
    for scans in by_domain.values():
        for prev, nxt in itertools.pairwise(scans):
            if prev["finished_at"] is None or (
                nxt["started_at"] and nxt["started_at"] < prev["finished_at"]
            ):
                overlaps += 1  # a scan began before the previous one ended
                continue
            due = prev["finished_at"] + timedelta(minutes=1)
            gap = (nxt["created_at"] - due).total_seconds()
            if gap < 0:
                early += 1  # enqueued before its due time: a duplicate
            late.append(gap)
    counts = sorted(len(v) for v in by_domain.values())
    statuses = await conn.fetch("SELECT status, count(*) AS n FROM jobs GROUP BY 1 ORDER BY 1")
    late.sort()
    print(
        f"schedule: {domains:,} domains every minute, {workers} workers, {minutes:g} min"
        f" ({(ended - began).total_seconds():.0f} s)"
    )
    by_status = ", ".join(f"{r['status']} {r['n']:,}" for r in statuses)
    print(f"  scans: {len(rows):,} ({by_status})")
    print(
        f"  scans per domain: min {counts[0]}, median {counts[len(counts) // 2]}, max {counts[-1]};"
        f" domains never scanned: {domains - len(by_domain)}"
    )
    if late:
        print(
            f"  enqueued after its due time (previous end + 1 min): median {late[len(late) // 2]:.1f} s,"
            f" p99 {late[int(len(late) * 0.99)]:.1f} s, max {late[-1]:.1f} s (jitter up to 6 s + tick ~5 s)"
        )
    print(
        f"  duplicates (enqueued before due): {early}; overlapping scans of one domain: {overlaps}"
    )
    met = overlaps == 0 and early == 0 and len(by_domain) == domains and (not late or late[-1] < 30)
    print(f"  target: once per due time, no duplicate, no overlap: {'met' if met else 'MISSED'}")
    return met


async def main(args: argparse.Namespace) -> int:
    base = Path(tempfile.mkdtemp(prefix="rescan-bench-", dir="/tmp"))
    base.chmod(0o755)
    server = FastPostgres(base / "data", tcp=True)
    server.start()
    ok = True
    try:
        for name in ("sites", "schedule"):
            admin = await asyncpg.connect(server.dsn)
            await admin.execute(f"CREATE DATABASE rescan_{name}")
            await admin.close()
        sites_dsn = f"postgresql://postgres@127.0.0.1:{server.port}/rescan_sites"
        schedule_dsn = f"postgresql://postgres@127.0.0.1:{server.port}/rescan_schedule"
        for dsn in (sites_dsn, schedule_dsn):
            await migrate(dsn, Settings(database_url=dsn))
        if args.index_rounds:
            await index_cost(sites_dsn, args.files, args.urls, args.index_rounds)
            return 0
        if not args.skip_sites:
            ok &= await site_targets(sites_dsn, args.files, args.urls)
        if args.minutes > 0:
            ok &= await schedule_target(schedule_dsn, args.domains, args.workers, args.minutes)
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)
    return 0 if ok else 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks.rescan_bench")
    parser.add_argument("--files", type=int, default=10)
    parser.add_argument("--urls", type=int, default=50_000, help="URLs per file")
    parser.add_argument("--domains", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--minutes", type=float, default=5.0, help="0: skip the schedule part")
    parser.add_argument("--skip-sites", action="store_true")
    parser.add_argument(
        "--index-rounds",
        type=int,
        default=0,
        help="only measure the per-file index's cost to first scans, this many rounds",
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main(parse_args())))
