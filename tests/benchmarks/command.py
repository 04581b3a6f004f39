"""`sitemap-worker bench [queue|scan]`: its options, and which benchmark runs. The worker's
command line hands everything after `bench` to `parse_args` here, then opens the configured
database (migrating it, as `migrate` does) and awaits `run`."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from worker.cli_args import Parser, integer, seconds
from worker.database_urls import Urls
from worker.settings import CONCURRENCY_MAX, Settings


def build_parser() -> Parser:
    bench = Parser(
        prog="sitemap-worker bench",
        description="Measure queue throughput and pickup latency (queue), or scan "
        "speed against bare lxml (scan), on the configured database.",
    )
    count = integer(1, 100_000_000)
    bench.add_argument(
        "part",
        nargs="?",
        default="queue",
        choices=["queue", "scan"],
        help="queue (drain, pickup, inserts) or scan (end to end vs bare lxml)",
    )
    bench.add_argument("--scan-files", type=integer(1, 1000), default=10, help="scan: urlset files")
    bench.add_argument(
        "--scan-urls",
        type=integer(1, 50_000),
        default=50_000,
        help="scan: URLs per file (the sitemap protocol's limit)",
    )
    bench.add_argument("--jobs", type=count, default=10_000, help="jobs to drain")
    bench.add_argument("--concurrency", type=integer(1, CONCURRENCY_MAX), default=10)
    bench.add_argument("--latency-jobs", type=count, default=200)
    bench.add_argument(
        "--insert-seconds",
        type=seconds(0, 3600),
        default=5.0,
        help="length of each insert-throughput run",
    )
    bench.add_argument("--insert-clients", type=integer(1, 100), default=8)
    bench.add_argument(
        "--repeat", type=integer(1, 100), default=3, help="repetitions of each measurement"
    )
    bench.add_argument(
        "--force",
        action="store_true",
        help="run even though the jobs table holds other jobs (it is emptied)",
    )
    return bench


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """The options after `bench`; `command` is set for the worker's own checks (cli_db)."""
    args = build_parser().parse_args(argv)
    args.command = "bench"
    return args


async def run(urls: Urls, settings: Settings, args: argparse.Namespace) -> int:
    if args.part == "scan":
        from tests.benchmarks.scan_bench import run_scan_bench

        return await run_scan_bench(urls, settings, args)
    from tests.benchmarks.queue_bench import run_bench

    return await run_bench(urls, settings, args)
