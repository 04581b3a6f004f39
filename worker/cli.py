"""`sitemap-worker` command line: migrate, run, enqueue, scan, status, health, prune, serve,
api-key, bench."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType

import asyncpg
from pydantic import ValidationError

from . import connections, loop_errors
from .cli_args import build_parser, check_combinations
from .cli_db import prepare
from .cli_errors import KNOWN_ERRORS, CliError, one_line
from .database_urls import Urls, open_database
from .logs import setup_logging
from .settings import CONCURRENCY_MAX, Settings, describe_errors
from .sql import q

log = logging.getLogger(__name__)

# The benchmarks are tools, not part of the worker: they live in the source tree only.
BENCHMARKS = Path(__file__).resolve().parents[1] / "tests" / "benchmarks"
NO_BENCHMARKS = (
    "sitemap-worker bench: error: the benchmarks live in the source tree "
    "(tests/benchmarks/), which this installation lacks: run `python -m worker "
    "bench` from the top of a checkout of sitemap-worker"
)


def main(argv: Sequence[str] | None = None) -> int:
    """The one boundary: argument and settings mistakes exit 2, an unreachable database or
    its refusal exits 1, each as one line on stderr; an unexpected error keeps its
    traceback (it is a bug)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:  # the benchmark's own parser takes the rest
        benchmarks = _benchmarks()
        if benchmarks is None:
            print(NO_BENCHMARKS, file=sys.stderr)
            return 2
        args = benchmarks.parse_args(argv[1:])
    else:
        args = build_parser().parse_args(argv)
        check_combinations(args)
    try:
        settings = Settings()
    except ValidationError as exc:
        print(f"sitemap-worker: error: {describe_errors(exc)}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level, settings.log_format)
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            loop_errors.install(runner.get_loop())
            return runner.run(_dispatch(args, settings))
    except KeyboardInterrupt:
        return 130
    except KNOWN_ERRORS as exc:
        log.debug("%s failed", args.command, exc_info=exc)  # WORKER_LOG_LEVEL=DEBUG shows where
        code, line = one_line(exc)
        print(f"sitemap-worker {args.command}: error: {line}", file=sys.stderr)
        return code


def _benchmarks() -> ModuleType | None:
    """tests/benchmarks/command.py of the checkout this package runs from, imported with that
    checkout first on the path; None when installed without it (a wheel holds the worker only)."""
    if not (BENCHMARKS / "command.py").is_file():
        return None
    root = str(BENCHMARKS.parents[1])
    if sys.path[:1] != [root]:
        sys.path.insert(0, root)
    return importlib.import_module("tests.benchmarks.command")


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
        applied = await prepare(args, urls, settings)
        if args.command == "migrate":
            print(f"applied: {', '.join(applied)}" if applied else "schema is up to date")
            return 0
        if args.command == "run":
            from .gc_tuning import tune_for_worker
            from .runner import serve

            tune_for_worker()
            await serve(urls, settings, concurrency=args.concurrency, burst=args.burst)
            return 0
        if args.command == "bench":
            benchmarks = _benchmarks()
            assert benchmarks is not None  # main() checked
            return int(await benchmarks.run(urls, settings, args))
        if args.command == "enqueue":
            return await _enqueue(urls, settings, args)
        if args.command == "status":
            return await _status(urls, settings, args)
        if args.command == "prune":
            return await _prune(urls, settings, args)
        if args.command == "scan":
            return await _scan(urls, settings, args)
        if args.command == "serve":
            from .api.serve import serve as serve_api

            await serve_api(
                urls,
                settings,
                host=args.host,
                port=args.port,
                with_worker=args.with_worker,
                concurrency=args.concurrency,
            )
            return 0
        if args.command == "domains":
            from .cli_domains import domains

            return await domains(urls, settings, args)
        if args.command == "api-key":
            from .cli_keys import api_key

            return await api_key(urls, settings, args)
    raise AssertionError(f"unhandled command {args.command}")


def _payloads(args: argparse.Namespace) -> tuple[str, list[str]]:
    """The job type and one payload (json) per job to insert (cli_args checked them)."""
    if args.job_type:
        return args.job_type, [args.payload or "{}"]
    return _scan_payloads(args.domains, args.max_urls, batch=args.batch)


def _scan_payloads(
    domains: list[str], max_urls: int | None, *, batch: bool = False
) -> tuple[str, list[str]]:
    """One sitemap_scan per domain, or one sitemap_batch for all of them."""
    extra = {"max_urls": max_urls} if max_urls is not None else {}
    if batch:
        return "sitemap_batch", [json.dumps({"domains": domains, **extra})]
    return "sitemap_scan", [json.dumps({"domain": d, **extra}) for d in domains]


async def _insert(
    urls: Urls,
    settings: Settings,
    job_type: str,
    payloads: list[str],
    priority: int = 0,
    max_attempts: int | None = None,
) -> list[int]:
    conn = await connections.connect(urls.work, settings)
    try:
        async with connections.transaction(conn, settings):
            rows = await conn.fetch(
                q("enqueue_many"), job_type, payloads, priority, max_attempts, None
            )
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
    concurrency = args.concurrency or min(len(ids), CONCURRENCY_MAX)
    worker = asyncio.create_task(
        serve(urls, settings, concurrency=concurrency, handle_signals=False, stop=stop),
        name="scan-worker",
    )
    waiter = asyncio.create_task(wait_for_jobs(urls.direct, settings, ids), name="scan-wait")
    await _until_either_ends(waiter, worker, stop)
    return await _print_final(urls, settings, ids)


async def _until_either_ends(
    waiter: asyncio.Task[object], worker: asyncio.Task[object], stop: asyncio.Event
) -> None:
    """Wait for the jobs to end, or for the worker running them to end first (then they never
    will here): then stop the other and raise what failed, the worker's error first."""
    try:
        await asyncio.wait((waiter, worker), return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()  # no-op once it is done
        stop.set()
        await asyncio.wait((waiter, worker))
    if worker.exception() is not None:
        worker.result()  # raises it
    if waiter.cancelled():
        raise CliError("the in-process worker stopped before the jobs ended")
    waiter.result()  # raises its error, if any


async def _enqueue(urls: Urls, settings: Settings, args: argparse.Namespace) -> int:
    job_type, payloads = _payloads(args)
    ids = await _insert(urls, settings, job_type, payloads, args.priority, args.max_attempts)
    for job_id in ids:
        print(job_id)
    if not args.wait:
        return 0
    from .waiting import wait_for_jobs

    rows = await wait_for_jobs(urls.direct, settings, ids)
    return await _print_final(urls, settings, [r["id"] for r in rows])


async def _print_final(urls: Urls, settings: Settings, ids: list[int]) -> int:
    conn = await connections.connect(urls.direct, settings)
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

    conn = await connections.connect(urls.direct, settings)
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
    conn = await connections.connect(urls.work, settings, command_timeout=None)
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
