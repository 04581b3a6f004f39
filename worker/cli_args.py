"""The command line's grammar: every argument is checked here, against the same limits the
database and the settings have, so a mistake ends in one `sitemap-worker CMD: error: ...`
line (exit 2) before anything connects."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from datetime import timedelta
from typing import Any, NoReturn

from .settings import CONCURRENCY_MAX, format_duration, parse_duration

BIGINT_MAX = 2**63 - 1  # jobs.id
INT_MAX = 2**31 - 1  # prune's batch (PostgreSQL integer)
PRIORITY_MAX = (
    1_000_000  # jobs.priority: CHECK between -PRIORITY_MAX and PRIORITY_MAX (migration 0008)
)
MAX_ATTEMPTS_MAX = 1000  # jobs.max_attempts: CHECK between 1 and 1000 (migration 0008)
MAX_URLS = 100_000_000  # the sitemap_scan and sitemap_batch payloads' own cap
PRUNE_AGE_MAX = timedelta(days=36_500)


class Parser(argparse.ArgumentParser):
    """argparse that reports a mistake in one line (no usage block): scripts and people
    both see exactly what was wrong; `--help` still shows the usage."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def integer(low: int, high: int, what: str = "") -> Callable[[str], int]:
    """An int in [low, high]; `what` says where the limit comes from."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(
                f"must be from {low} to {high}{f' ({what})' if what else ''}, not {text}"
            )
        return value

    parse.__name__ = "integer"  # argparse names the type in some messages
    return parse


def seconds(low: float, high: float) -> Callable[[str], float]:
    """A finite number of seconds, more than `low`, at most `high`."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
        if not (math.isfinite(value) and low < value <= high):
            raise argparse.ArgumentTypeError(
                f"must be more than {low:g} and at most {high:g} s, not {text}"
            )
        return value

    parse.__name__ = "seconds"
    return parse


def age(text: str) -> timedelta:
    """Durations as the settings take them (`30d`, `12h`, `90m`), up to PRUNE_AGE_MAX."""
    try:
        value = parse_duration(text)
    except ValueError:  # too large for a timedelta
        value = PRUNE_AGE_MAX * 2
    if not isinstance(value, timedelta) or value <= timedelta(0):
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (try 30d, 12h, 90m)")
    if value > PRUNE_AGE_MAX:
        raise argparse.ArgumentTypeError(
            f"must be at most {format_duration(PRUNE_AGE_MAX)} (100 years), not {text}"
        )
    return value


def text(value: str) -> str:
    """A name PostgreSQL can store: text cannot hold NUL, and UTF-8 has no lone surrogates
    (which is what undecodable bytes in argv become)."""
    problem = text_problem(value)
    if problem:
        raise argparse.ArgumentTypeError(f"{problem}: {value!r}")
    return value


def payload(value: str) -> str:
    """A JSON object that jsonb accepts, returned as the text to store."""
    try:
        parsed = json.loads(value, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {_first_line(exc)}") from None
    if not isinstance(parsed, dict):
        raise argparse.ArgumentTypeError(
            f"must be a JSON object ({{...}}), not {type(parsed).__name__}"
        )
    problem = json_problem(parsed)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number (PostgreSQL's jsonb refuses it)")


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def json_problem(value: Any) -> str | None:
    """A string jsonb cannot store, anywhere in the document (iteratively: json.loads has
    already bounded the depth)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str) and (problem := text_problem(item)):
            return f"holds a string PostgreSQL cannot store: it {problem}"
    return None


def text_problem(value: str) -> str | None:
    if "\x00" in value:
        return "contains \\u0000 (NUL)"
    if any("\ud800" <= ch <= "\udfff" for ch in value):
        return "contains a lone surrogate (not valid UTF-8)"
    return None


def build_parser() -> Parser:
    parser = Parser(
        prog="sitemap-worker",
        description="Postgres-native job queue worker that scans websites' sitemaps. "
        "Uses DATABASE_URL, or an embedded PostgreSQL when it is unset.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    concurrency = integer(1, CONCURRENCY_MAX, "WORKER_CONCURRENCY's range")
    max_urls = integer(1, MAX_URLS)

    sub.add_parser("migrate", help="apply the SQL migrations (safe to repeat, and concurrently)")

    run = sub.add_parser("run", help="run the worker until SIGINT/SIGTERM")
    run.add_argument(
        "--concurrency", type=concurrency, help="jobs at once (default WORKER_CONCURRENCY, 10)"
    )
    run.add_argument("--burst", action="store_true", help="exit once no runnable job is left")
    run.add_argument("--no-migrate", action="store_true", help="do not apply migrations on start")

    enqueue = sub.add_parser("enqueue", help="insert jobs and print their ids")
    enqueue.add_argument(
        "domains", nargs="*", type=text, metavar="DOMAIN", help="one sitemap_scan job each"
    )
    enqueue.add_argument(
        "--max-urls", type=max_urls, help="cap on stored URLs per scan (with DOMAINs)"
    )
    enqueue.add_argument(
        "--batch",
        action="store_true",
        help="one sitemap_batch job for all DOMAINs (child scans run in parallel)",
    )
    enqueue.add_argument(
        "--job-type", type=text, help="another job type, e.g. noop (with --payload)"
    )
    enqueue.add_argument("--payload", type=payload, help="JSON object for --job-type (default {})")
    enqueue.add_argument(
        "--priority",
        type=integer(-PRIORITY_MAX, PRIORITY_MAX, "the jobs table's range"),
        default=0,
        help="higher runs first",
    )
    enqueue.add_argument(
        "--max-attempts",
        type=integer(1, MAX_ATTEMPTS_MAX, "the jobs table's range"),
        help="attempts before failing (default 3)",
    )
    enqueue.add_argument("--wait", action="store_true", help="show progress until the jobs end")

    scan = sub.add_parser("scan", help="scan domains in this process: progress, result, tree")
    scan.add_argument("domains", nargs="+", type=text, metavar="DOMAIN")
    scan.add_argument("--max-urls", type=max_urls, help="cap on stored URLs per scan")
    scan.add_argument("--concurrency", type=concurrency, help="jobs at once in this process")
    scan.add_argument(
        "--no-migrate", action="store_true", help="do not apply migrations (with DATABASE_URL)"
    )

    status = sub.add_parser("status", help="one job's details, or a summary of recent jobs")
    status.add_argument(
        "job_id", nargs="?", type=integer(1, BIGINT_MAX, "a job id"), metavar="JOB_ID"
    )
    status.add_argument("--limit", type=integer(0, 100_000), default=20, help="recent jobs to list")

    prune = sub.add_parser(
        "prune",
        help="delete ended jobs (and what their scans stored) "
        "older than a given age, in small committed batches",
    )
    prune.add_argument(
        "--older-than",
        required=True,
        type=age,
        metavar="AGE",
        help="e.g. 30d, 12h, 90m: jobs that ended longer ago than this",
    )
    prune.add_argument(
        "--batch",
        type=integer(1, INT_MAX, "PostgreSQL integer"),
        default=100,
        help="jobs per transaction",
    )

    health = sub.add_parser("health", help="exit 0 if the database (and a worker) is healthy")
    health.add_argument(
        "--worker",
        metavar="URL",
        help="also require this worker's /health to answer 200, e.g. "
        "http://127.0.0.1:9187 (its WORKER_METRICS_PORT)",
    )
    health.add_argument("--timeout", type=seconds(0, 3600), default=5.0, help="seconds per check")

    serve = sub.add_parser(
        "serve", help="serve the HTTP API (/api/v3) and the dashboard (/) until SIGINT/SIGTERM"
    )
    serve.add_argument(
        "--host",
        type=text,
        default="127.0.0.1",
        help="address to bind (default 127.0.0.1; any other needs an API key in the database)",
    )
    serve.add_argument("--port", type=integer(0, 65535, "a TCP port"), default=8080)
    serve.add_argument(
        "--with-worker", action="store_true", help="also run a worker in this process"
    )
    serve.add_argument(
        "--concurrency", type=concurrency, help="the worker's jobs at once (with --with-worker)"
    )
    serve.add_argument("--no-migrate", action="store_true", help="do not apply migrations on start")

    keys = sub.add_parser("api-key", help="create, list or revoke HTTP API keys")
    key_sub = keys.add_subparsers(dest="key_command", required=True, metavar="ACTION")
    create = key_sub.add_parser("create", help="make a key; it is printed once, as the last line")
    create.add_argument("--tenant", type=text, help="the tenant whose jobs the key sees")
    kind = create.add_mutually_exclusive_group()
    kind.add_argument("--admin", action="store_true", help="sees and acts on every tenant's jobs")
    kind.add_argument(
        "--read-only", action="store_true", help="sees jobs (its tenant's, or all), changes nothing"
    )
    create.add_argument("--name", type=text, default="", help="a label shown by `api-key list`")
    key_sub.add_parser("list", help="every key: id, prefix, kind, tenant, name, dates")
    revoke = key_sub.add_parser("revoke", help="revoke a key by its id or prefix")
    revoke.add_argument("key", type=text, metavar="ID_OR_PREFIX")

    from .cli_domains import add_domains_parser  # here: it imports this module

    add_domains_parser(sub)

    # Its options are the benchmark's own (tests/benchmarks/command.py): cli.main hands it
    # everything after `bench`; this entry lists it in --help.
    sub.add_parser(
        "bench",
        help="measure queue throughput, pickup latency and scan speed (from a source checkout)",
    )
    return parser


def check_combinations(args: argparse.Namespace) -> None:
    """Options that parse alone but contradict each other: said, never silently ignored."""
    if args.command == "serve" and args.concurrency is not None and not args.with_worker:
        _refuse("serve", "--concurrency goes with --with-worker")
    if args.command == "api-key" and args.key_command == "create":
        if not (args.admin or args.read_only) and not args.tenant:
            _refuse("api-key", "a tenant key needs --tenant T (or give --admin or --read-only)")
        if args.tenant is not None and not args.tenant.strip():
            _refuse("api-key", "--tenant must not be empty")
    if args.command != "enqueue":
        return
    if args.job_type:
        if args.domains:
            _refuse("enqueue", "give DOMAINs or --job-type, not both")
        if args.max_urls is not None:
            _refuse(
                "enqueue",
                "--max-urls goes with DOMAINs, not with --job-type (put max_urls in --payload)",
            )
        if args.batch:
            _refuse("enqueue", "--batch goes with DOMAINs, not with --job-type")
        return
    if args.payload is not None:
        _refuse("enqueue", "--payload goes with --job-type; DOMAINs get theirs from --max-urls")
    if not args.domains:
        _refuse("enqueue", "give at least one DOMAIN, or --job-type")


def _refuse(command: str, message: str) -> NoReturn:
    sys.stderr.write(f"sitemap-worker {command}: error: {message}\n")
    raise SystemExit(2)
