"""`sitemap-worker` command line: migrate, run, enqueue, scan, status, health, bench."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Sequence
from datetime import timedelta

import asyncpg

from . import db
from .database import Urls, open_database
from .logs import setup_logging
from .migrate import migrate
from .settings import Settings, parse_duration
from .sql import q


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sitemap-worker",
        description="Postgres-native job queue worker that scans websites' sitemaps. "
        "Uses DATABASE_URL, or an embedded PostgreSQL when it is unset.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("migrate", help="apply the SQL migrations (safe to repeat, and concurrently)")

    run = sub.add_parser("run", help="run the worker until SIGINT/SIGTERM")
    run.add_argument("--concurrency", type=int, help="jobs at once (default WORKER_CONCURRENCY, 10)")
    run.add_argument("--burst", action="store_true", help="exit once no runnable job is left")
    run.add_argument("--no-migrate", action="store_true", help="do not apply migrations on start")

    enqueue = sub.add_parser("enqueue", help="insert jobs and print their ids")
    enqueue.add_argument("domains", nargs="*", metavar="DOMAIN", help="one sitemap_scan job each")
    enqueue.add_argument("--max-urls", type=int, help="cap on stored URLs per scan")
    enqueue.add_argument("--batch", action="store_true",
                         help="one sitemap_batch job for all DOMAINs (child scans run in parallel)")
    enqueue.add_argument("--job-type", help="another job type, e.g. noop (with --payload)")
    enqueue.add_argument("--payload", default="{}", help="JSON payload for --job-type")
    enqueue.add_argument("--priority", type=int, default=0, help="higher runs first")
    enqueue.add_argument("--max-attempts", type=int, help="attempts before failing (default 3)")
    enqueue.add_argument("--wait", action="store_true", help="show progress until the jobs end")

    scan = sub.add_parser("scan", help="scan domains in this process: progress, result, tree")
    scan.add_argument("domains", nargs="+", metavar="DOMAIN")
    scan.add_argument("--max-urls", type=int, help="cap on stored URLs per scan")
    scan.add_argument("--concurrency", type=int, help="jobs at once in this process")

    status = sub.add_parser("status", help="one job's details, or a summary of recent jobs")
    status.add_argument("job_id", nargs="?", type=int)
    status.add_argument("--limit", type=int, default=20, help="recent jobs to list")

    prune = sub.add_parser("prune", help="delete ended jobs (and what their scans stored) "
                           "older than a given age, in small committed batches")
    prune.add_argument("--older-than", required=True, type=_duration, metavar="AGE",
                       help="e.g. 30d, 12h, 90m: jobs that ended longer ago than this")
    prune.add_argument("--batch", type=int, default=100, help="jobs per transaction")

    health = sub.add_parser("health", help="exit 0 if the database (and a worker) is healthy")
    health.add_argument("--worker", metavar="URL",
                        help="also require this worker's /health to answer 200, e.g. "
                        "http://127.0.0.1:9187 (its WORKER_METRICS_PORT)")
    health.add_argument("--timeout", type=float, default=5.0, help="seconds per check")

    bench = sub.add_parser("bench", help="measure queue throughput and pickup latency")
    bench.add_argument("part", nargs="?", default="queue", choices=["queue", "scan"],
                       help="queue (drain, pickup, inserts) or scan (end to end vs bare lxml)")
    bench.add_argument("--scan-files", type=int, default=10, help="scan: urlset files")
    bench.add_argument("--scan-urls", type=int, default=50_000, help="scan: URLs per file")
    bench.add_argument("--jobs", type=int, default=10_000, help="jobs to drain")
    bench.add_argument("--concurrency", type=int, default=10)
    bench.add_argument("--latency-jobs", type=int, default=200)
    bench.add_argument("--insert-seconds", type=float, default=5.0,
                       help="length of each insert-throughput run")
    bench.add_argument("--insert-clients", type=int, default=8)
    bench.add_argument("--repeat", type=int, default=3, help="repetitions of each measurement")
    bench.add_argument("--force", action="store_true",
                       help="run even though the jobs table holds other jobs (it is emptied)")
    return parser


def _duration(text: str) -> timedelta:
    """Durations as the settings take them (`30d`, `12h`, `90m`)."""
    value = parse_duration(text)
    if not isinstance(value, timedelta):
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (try 30d, 12h, 90m)")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings()
    setup_logging(settings.log_level, settings.log_format)
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            return runner.run(_dispatch(args, settings))
    except KeyboardInterrupt:
        return 130


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when it is installed (Linux and macOS): about 5-10% more jobs/s."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


async def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    async with open_database(settings, announce=args.command != "health") as urls:
        if args.command == "health":
            from .health import check_health

            healthy, line = await check_health(urls.work, settings, args.worker, args.timeout)
            print(line, file=sys.stdout if healthy else sys.stderr)
            return 0 if healthy else 1
        if args.command == "migrate":
            applied = await migrate(urls.listen, settings)
            print(f"applied: {', '.join(applied)}" if applied else "schema is up to date")
            return 0
        if args.command == "run":
            from .gc_tuning import tune_for_worker
            from .runner import serve

            if not args.no_migrate:
                await migrate(urls.listen, settings)
            tune_for_worker()
            await serve(urls, settings, concurrency=args.concurrency, burst=args.burst)
            return 0
        if args.command == "bench":
            await migrate(urls.listen, settings)
            if args.part == "scan":
                from .bench_scan import run_scan_bench

                return await run_scan_bench(urls, settings, args)
            from .bench import run_bench

            return await run_bench(urls, settings, args)
        await migrate(urls.listen, settings)
        if args.command == "enqueue":
            return await _enqueue(urls, settings, args)
        if args.command == "status":
            return await _status(urls, settings, args)
        if args.command == "prune":
            return await _prune(urls, settings, args)
        if args.command == "scan":
            return await _scan(urls, settings, args)
    raise AssertionError(f"unhandled command {args.command}")


def _payloads(args: argparse.Namespace) -> tuple[str, list[str]]:
    """The job type and one payload (json) per job to insert; argument errors exit."""
    if args.job_type:
        if args.domains:
            raise SystemExit("enqueue: give DOMAINs or --job-type, not both")
        try:
            json.loads(args.payload)
        except ValueError as exc:
            raise SystemExit(f"enqueue: --payload is not JSON: {exc}") from None
        return args.job_type, [args.payload]
    if not args.domains:
        raise SystemExit("enqueue: give at least one DOMAIN, or --job-type")
    return _scan_payloads(args.domains, args.max_urls, batch=args.batch)


def _scan_payloads(domains: list[str], max_urls: int | None, *,
                   batch: bool = False) -> tuple[str, list[str]]:
    """One sitemap_scan per domain, or one sitemap_batch for all of them."""
    extra = {"max_urls": max_urls} if max_urls is not None else {}
    if batch:
        return "sitemap_batch", [json.dumps({"domains": domains, **extra})]
    return "sitemap_scan", [json.dumps({"domain": d, **extra}) for d in domains]


async def _insert(urls: Urls, settings: Settings, job_type: str, payloads: list[str],
                  priority: int = 0, max_attempts: int | None = None) -> list[int]:
    conn = await db.connect(urls.work, settings)
    try:
        async with db.transaction(conn, settings):
            rows = await conn.fetch(q("enqueue_many"), job_type, payloads, priority, max_attempts,
                                    None)
    finally:
        await conn.close()
    return [r["id"] for r in rows]


async def _scan(urls: Urls, settings: Settings, args: argparse.Namespace) -> int:
    """Enqueue, then run a worker in this process until these jobs have ended."""
    from .gc_tuning import tune_for_worker
    from .runner import serve
    from .waiting import wait_for_jobs

    ids = await _insert(urls, settings, *_scan_payloads(args.domains, args.max_urls))
    tune_for_worker()
    stop = asyncio.Event()
    worker = asyncio.create_task(serve(urls, settings, concurrency=args.concurrency or len(ids),
                                       handle_signals=False, stop=stop))
    try:
        await wait_for_jobs(urls.listen, settings, ids)
    finally:
        stop.set()
        await worker
    return await _print_final(urls, settings, ids)


async def _enqueue(urls: Urls, settings: Settings, args: argparse.Namespace) -> int:
    job_type, payloads = _payloads(args)
    ids = await _insert(urls, settings, job_type, payloads, args.priority, args.max_attempts)
    for job_id in ids:
        print(job_id)
    if not args.wait:
        return 0
    from .waiting import wait_for_jobs

    rows = await wait_for_jobs(urls.listen, settings, ids)
    return await _print_final(urls, settings, [r["id"] for r in rows])


async def _print_final(urls: Urls, settings: Settings, ids: list[int]) -> int:
    conn = await db.connect(urls.listen, settings)
    try:
        failed = False
        for job_id in ids:
            job = await conn.fetchrow(q("get_job"), job_id)
            print(await _describe_job(conn, job))
            failed |= job["status"] != "completed"
        return 1 if failed else 0
    finally:
        await conn.close()


async def _status(urls: Urls, settings: Settings, args: argparse.Namespace) -> int:
    from .report import summary

    conn = await db.connect(urls.listen, settings)
    try:
        if args.job_id is not None:
            job = await conn.fetchrow(q("get_job"), args.job_id)
            if job is None:
                print(f"no job {args.job_id}", file=sys.stderr)
                return 1
            print(await _describe_job(conn, job))
            return 0
        counts = await conn.fetch(q("count_by_status"))
        recent = await conn.fetch(q("recent_jobs"), args.limit)
        print(summary(counts, recent))
        return 0
    finally:
        await conn.close()


async def _prune(urls: Urls, settings: Settings, args: argparse.Namespace) -> int:
    # Autocommit and no client-side timeout: the procedure commits batch by batch and may
    # run for a while on a large backlog.
    conn = await db.connect(urls.work, settings, command_timeout=None)
    try:
        deleted = await conn.fetchval(q("prune"), args.older_than, args.batch)
    finally:
        await conn.close()
    print(f"deleted {deleted} ended job(s) older than {args.older_than}")
    return 0


async def _describe_job(conn: asyncpg.Connection, job: asyncpg.Record) -> str:
    """A job's details, and for a scan the tree of sitemap files it found."""
    from .report import job_detail, sitemap_tree

    text = job_detail(job)
    if job["job_type"] == "sitemap_scan":
        files = await conn.fetch(q("sitemap_tree"), job["id"])
        text += "\n  sitemaps\n" + sitemap_tree(files)
    return text
