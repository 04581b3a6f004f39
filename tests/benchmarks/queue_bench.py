"""`sitemap-worker bench` (queue): drain throughput, pickup latency, and what the wake-up
trigger costs inserts, measured the way the anchor figures for procrastinate and PgQueuer were
(shared research, anchor-bench.md), so the numbers can be set side by side.

- Drain: N noop jobs inserted in one statement, ANALYZE, then our engine in burst mode,
  in process; clocked from worker start to `run()` returning; plus per-job database cost.
- Pickup: a real `worker run` process, idle and listening; jobs inserted one by one; the
  claim's `started_at` minus the time the INSERT returned (it had committed).
- Insert: pgbench one-row INSERTs with the shipped trigger, none, and a per-row NOTIFY.

The bench empties the jobs table, so it refuses to run over jobs it did not make.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import os
import platform
import re
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

import asyncpg

from tests.benchmarks.statements import bq
from tests.support.processes import WorkerProcess
from worker import connections
from worker.database_urls import Urls
from worker.engine import JobLoop
from worker.jobs import default_registry
from worker.listener import WAKEUP_CHANNEL
from worker.report import table
from worker.settings import Settings
from worker.sql import q

CONTROL_APPLICATION = "sitemap-worker-bench"
K = TypeVar("K")


# -- figures ------------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p99 of 200 samples is the second largest)."""
    ordered = sorted(values)
    return ordered[max(math.ceil(p / 100 * len(ordered)) - 1, 0)]


def spread(values: Sequence[float], fmt: str = ",.0f") -> str:
    """`median [min..max]`, the anchors' notation."""
    if not values:
        return "-"
    if len(values) == 1:
        return format(values[0], fmt)
    return (
        f"{format(statistics.median(values), fmt)} "
        f"[{format(min(values), fmt)}..{format(max(values), fmt)}]"
    )


def latency_summary(ms: Sequence[float]) -> dict[str, float]:
    return {
        "p50": percentile(ms, 50),
        "p95": percentile(ms, 95),
        "p99": percentile(ms, 99),
        "max": max(ms),
    }


# -- the database side ----------------------------------------------------------------------


async def control_connection(dsn: str) -> asyncpg.Connection:
    """The bench's own session: resets, counters, checks (no prepared statements)."""
    return await asyncpg.connect(
        dsn, statement_cache_size=0, server_settings={"application_name": CONTROL_APPLICATION}
    )


@dataclass(frozen=True, slots=True)
class Counters:
    commits: int
    xmax: int
    wal_syncs: int | None
    wal_bytes: int | None

    def per_job(self, later: Counters, jobs: int) -> dict[str, float | None]:
        def delta(a: int | None, b: int | None) -> float | None:
            return None if a is None or b is None else (b - a) / jobs

        return {
            "commits": delta(self.commits, later.commits),
            "write_xids": delta(self.xmax, later.xmax),
            "wal_syncs": delta(self.wal_syncs, later.wal_syncs),
            "wal_bytes": delta(self.wal_bytes, later.wal_bytes),
        }


async def read_counters(conn: asyncpg.Connection, version_num: int) -> Counters:
    name = (
        "counters"
        if version_num >= 180000
        else "counters_pg14"
        if version_num >= 140000
        else "counters_pg13"
    )
    row = await conn.fetchrow(bq(name))
    return Counters(row["commits"], row["xmax"], row["wal_syncs"], row["wal_bytes"])


async def poll_until(
    check: Callable[[], Awaitable[bool]], timeout: float, interval: float = 0.02
) -> bool:
    """Call `check` until it is true (True) or `timeout` s have passed (False)."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(interval)
    return True


async def settle_stats(
    conn: asyncpg.Connection, application: str | None, timeout: float = 5.0
) -> bool:
    """Wait until the measured sessions have gone: a backend flushes its statistics on exit,
    but a live one only about once a second."""

    async def gone() -> bool:
        return not await conn.fetchval(bq("other_backends"), application)

    return await poll_until(gone, timeout)


async def paced_inserts(
    insert_one: Callable[[], Awaitable[K]],
    count: int,
    *,
    interval: float = 0.02,
    settle: float = 1.0,
) -> list[tuple[K, float]]:
    """After `settle` s of idle, call `insert_one` `count` times on a fixed `interval` grid;
    each result comes with `time.time()` taken right after the call returned (an autocommit
    INSERT has committed by then)."""
    await asyncio.sleep(settle)
    loop = asyncio.get_running_loop()
    start = loop.time()
    stamped: list[tuple[K, float]] = []
    for i in range(count):
        delay = start + i * interval - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        key = await insert_one()
        stamped.append((key, time.time()))
    return stamped


@contextlib.contextmanager
def quiet_worker_logs() -> Iterator[None]:
    """Per-job INFO lines would be most of the work of a noop drain."""
    logger = logging.getLogger("worker")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


# -- 1. drain -------------------------------------------------------------------------------


@dataclass(slots=True)
class DrainRun:
    jobs: int
    seconds: float
    insert_seconds: float
    cost: dict[str, float | None]
    check: str
    ok: bool

    @property
    def rate(self) -> float:
        return self.jobs / self.seconds


async def drain_ours(
    urls: Urls,
    settings: Settings,
    conn: asyncpg.Connection,
    version_num: int,
    jobs: int,
    concurrency: int,
) -> DrainRun:
    """One drain of `jobs` noop jobs by an in-process burst worker. Costs are deltas over
    enqueue plus drain (the anchors' window)."""
    await conn.execute(bq("reset_jobs"))
    before = await read_counters(conn, version_num)
    began = time.perf_counter()
    await conn.execute(q("enqueue_many"), "noop", ["{}"] * jobs, 0, None, None)
    inserted = time.perf_counter() - began
    await conn.execute(bq("analyze_jobs"))
    pool = await connections.create_pool(
        urls.work, settings, size=settings.pool_size_for(concurrency)
    )
    try:
        with quiet_worker_logs():
            worker = JobLoop(
                pool, settings, default_registry(), concurrency=concurrency, burst=True
            )
            began = time.perf_counter()
            await _run_bounded(worker, 60 + jobs / 100)
            seconds = time.perf_counter() - began
    finally:
        await pool.close()
    settled = await settle_stats(conn, connections.APPLICATION_NAME)
    after = await read_counters(conn, version_num)
    row = await conn.fetchrow(bq("drain_check"))
    ok = row["total"] == row["completed_once"] == jobs == worker.claimed
    check = (
        f"{row['completed_once']}/{jobs} completed with exactly one attempt, {worker.claimed} claimed"
        + ("" if ok else f"; completed {row['completed']}, rows {row['total']}")
        + ("" if settled else "; other sessions stayed connected, costs may be incomplete")
    )
    return DrainRun(jobs, seconds, inserted, before.per_job(after, jobs), check, ok)


async def _run_bounded(worker: JobLoop, timeout: float) -> None:
    """A burst worker whose claims keep failing (say, a schema that is not current) would
    retry for ever: stop it and say so."""
    task = asyncio.create_task(worker.run())
    done, _ = await asyncio.wait({task}, timeout=timeout)
    if not done:
        worker.request_stop()
        await task
        raise RuntimeError(
            f"the drain did not finish within {timeout:.0f} s (see the worker's warnings above)"
        )
    task.result()


def _cost(value: float | None, fmt: str = ".2f") -> str:
    return "n/a" if value is None else format(value, fmt)


def drain_table(runs: Sequence[DrainRun]) -> str:
    rows = [
        (
            str(i),
            f"{r.rate:,.0f}",
            f"{r.seconds:.3f}",
            _cost(r.cost["commits"]),
            _cost(r.cost["write_xids"]),
            _cost(r.cost["wal_syncs"]),
            _cost(r.cost["wal_bytes"], ",.0f"),
            "ok" if r.ok else "FAILED",
        )
        for i, r in enumerate(runs, 1)
    ]
    return table(
        (
            "run",
            "jobs/s",
            "drain s",
            "commits/job",
            "write xids/job",
            "WAL syncs/job",
            "WAL bytes/job",
            "exactly once",
        ),
        rows,
    )


def _median_cost(runs: Sequence[DrainRun], key: str, fmt: str = ".2f") -> str:
    values = [r.cost[key] for r in runs if r.cost[key] is not None]
    return spread(values, fmt) if values else "n/a"


# -- 2. pickup latency --------------------------------------------------------------------


async def wait_started(
    conn: asyncpg.Connection, ids: list[int], timeout: float = 15.0
) -> dict[int, float]:
    """started_at (epoch s) of every job once all have been claimed and completed."""
    rows: list[asyncpg.Record] = []

    async def all_done() -> bool:
        nonlocal rows
        rows = await conn.fetch(bq("pickup_times"), ids)
        return len(rows) == len(ids) and all(r["status"] == "completed" for r in rows)

    if not await poll_until(all_done, timeout, 0.05):
        left = len(ids) - sum(r["status"] == "completed" for r in rows)
        raise RuntimeError(f"{left} of {len(ids)} latency jobs not completed after {timeout:.0f} s")
    return {r["id"]: r["started"] for r in rows}


async def pickup_ours(
    urls: Urls, settings: Settings, conn: asyncpg.Connection, count: int, concurrency: int
) -> list[float]:
    """Claim latency in ms (started_at minus commit) for `count` jobs inserted 20 ms apart into
    an idle worker process that has been listening for 1 s."""
    await conn.execute(bq("reset_jobs"))
    proc = await WorkerProcess.start(
        {"DATABASE_URL": urls.work, "LISTEN_DATABASE_URL": urls.direct},
        "run",
        "--concurrency",
        str(concurrency),
        "--no-migrate",
    )
    try:
        await proc.wait_ready(30)
        producer = await connections.connect(urls.work, settings)
        try:
            stamped = await paced_inserts(
                lambda: producer.fetchval(q("enqueue_many"), "noop", ["{}"], 0, None, None), count
            )
        finally:
            await producer.close()
        started = await wait_started(conn, [job_id for job_id, _ in stamped])
    finally:
        await proc.stop()
    return [(started[job_id] - committed) * 1000 for job_id, committed in stamped]


# -- 3. insert throughput -----------------------------------------------------------------

INSERT_VARIANTS = ("trigger (as shipped)", "no trigger", "per-row NOTIFY (reference)")
_LIBPQ_ENV = {
    "host": "PGHOST",
    "port": "PGPORT",
    "user": "PGUSER",
    "password": "PGPASSWORD",
    "dbname": "PGDATABASE",
    "sslmode": "PGSSLMODE",
    "sslrootcert": "PGSSLROOTCERT",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
    "connect_timeout": "PGCONNECT_TIMEOUT",
    "options": "PGOPTIONS",
}


def libpq_env(dsn: str) -> dict[str, str]:
    """PG* variables for a libpq client from a URL, TCP (`user@host:port/db`) or socket
    (`user@/db?host=/dir&port=5432`) form."""
    parts = urlsplit(dsn)
    values: dict[str, str] = {}
    if parts.hostname:
        values["host"] = parts.hostname
    if parts.port:
        values["port"] = str(parts.port)
    if parts.username:
        values["user"] = unquote(parts.username)
    if parts.password:
        values["password"] = unquote(parts.password)
    if parts.path.strip("/"):
        values["dbname"] = unquote(parts.path.strip("/"))
    values.update(parse_qsl(parts.query))
    return {_LIBPQ_ENV[k]: v for k, v in values.items() if k in _LIBPQ_ENV}


def redact(dsn: str) -> str:
    parts = urlsplit(dsn)
    if not parts.password:
        return dsn
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")))


def find_pgbench() -> Path | None:
    """Next to the server binaries first (same version), else on PATH."""
    from worker.embedded_pg import EmbeddedPostgresError, find_bindir

    with contextlib.suppress(EmbeddedPostgresError):
        candidate = find_bindir() / "pgbench"
        if candidate.exists():
            return candidate
    found = shutil.which("pgbench")
    return Path(found) if found else None


async def _pgbench(pgbench: Path, script: Path, dsn: str, clients: int, seconds: int) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")} | libpq_env(dsn)
    proc = await asyncio.create_subprocess_exec(
        str(pgbench),
        "-n",
        "-M",
        "prepared",
        "-c",
        str(clients),
        "-j",
        str(min(2, clients)),
        "-T",
        str(seconds),
        "-f",
        str(script),
        env=env,
        cwd="/",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    text = out.decode() + err.decode()
    found = re.search(r"tps = ([\d.]+) \(without initial connection time\)", text)
    if proc.returncode != 0 or found is None:
        raise RuntimeError(f"pgbench failed (exit {proc.returncode}):\n{text[-2000:]}")
    return float(found.group(1))


def _statement(name: str) -> str:
    """A bench statement without its comment lines, for the report."""
    return " ".join(line for line in bq(name).splitlines() if not line.lstrip().startswith("--"))


def pgbench_command(clients: int, seconds: int) -> str:
    return (
        f"pgbench -n -M prepared -c {clients} -j {min(2, clients)} -T {seconds} "
        f"-f insert.sql  (insert.sql: {_statement('pgbench_insert')})"
    )


async def insert_throughput(
    urls: Urls, conn: asyncpg.Connection, pgbench: Path, *, clients: int, seconds: int, repeat: int
) -> dict[str, list[tuple[float, int]]]:
    """(TPS, wake-ups heard) per variant, repetitions interleaved across the variants, with
    one LISTEN session open on the wake-up channel. The trigger state is restored after."""
    shipped_state = await conn.fetchval(bq("wake_trigger_enabled"))
    heard = 0

    def on_notify(*_: object) -> None:
        nonlocal heard
        heard += 1

    listener = await asyncpg.connect(
        urls.direct, server_settings={"application_name": CONTROL_APPLICATION}
    )
    await listener.add_listener(WAKEUP_CHANNEL, on_notify)
    results: dict[str, list[tuple[float, int]]] = {v: [] for v in INSERT_VARIANTS}
    with tempfile.TemporaryDirectory(prefix="sitemap-worker-bench-") as tmp:
        script = Path(tmp) / "insert.sql"
        script.write_text(bq("pgbench_insert") + "\n")
        try:
            for _ in range(repeat):
                for variant in INSERT_VARIANTS:
                    await conn.execute(bq("reset_jobs"))
                    await conn.execute(bq("per_row_notify_drop"))
                    await conn.execute(
                        bq(
                            "wake_trigger_enable"
                            if variant == INSERT_VARIANTS[0]
                            else "wake_trigger_disable"
                        )
                    )
                    if variant == INSERT_VARIANTS[2]:
                        await conn.execute(bq("per_row_notify_create"))
                    heard = 0
                    tps = await _pgbench(pgbench, script, urls.direct, clients, seconds)
                    results[variant].append((tps, heard))
                    with contextlib.suppress(asyncpg.InsufficientPrivilegeError):
                        await conn.execute(bq("checkpoint"))
        finally:
            await conn.execute(bq("per_row_notify_drop"))
            await conn.execute(
                bq("wake_trigger_disable" if shipped_state == "D" else "wake_trigger_enable")
            )
            await conn.execute(bq("reset_jobs"))
            await listener.close()
    return results


# -- the report ----------------------------------------------------------------------------


def _versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for name in ("asyncpg", "uvloop"):
        with contextlib.suppress(PackageNotFoundError):
            found.append(f"{name} {version(name)}")
    return ", ".join(found)


def environment_lines(facts: asyncpg.Record, dsn: str) -> list[str]:
    return [
        f"database:  {redact(dsn)} ({facts['database']})",
        f"server:    PostgreSQL {facts['version']}; fsync={facts['fsync']}, "
        f"synchronous_commit={facts['synchronous_commit']}, shared_buffers={facts['shared_buffers']}",
        f"client:    Python {platform.python_version()}, {_versions()}; {os.cpu_count()} CPUs "
        f"(os.cpu_count), {platform.system()} {platform.release()}",
    ]


def _command(args: argparse.Namespace) -> str:
    return (
        "sitemap-worker bench queue"
        f" --jobs {args.jobs} --concurrency {args.concurrency} --latency-jobs {args.latency_jobs}"
        f" --insert-seconds {args.insert_seconds:g} --insert-clients {args.insert_clients}"
    )


def _say(line: str = "") -> None:
    print(line, flush=True)


async def run_bench(urls: Urls, settings: Settings, args: argparse.Namespace) -> int:
    """Print the three measurements; exit 1 if a drain lost or repeated a job."""
    repeat = getattr(args, "repeat", 3)
    conn = await control_connection(urls.direct)
    try:
        facts = await conn.fetchrow(bq("server_facts"))
        foreign = await conn.fetchval(bq("foreign_jobs"))
        if foreign and not getattr(args, "force", False):
            print(
                f"bench: the jobs table holds {foreign} job(s) that are not noop benchmark jobs, and "
                "the bench empties it; point DATABASE_URL at a scratch database (or pass --force)",
                file=sys.stderr,
            )
            return 2
        _say("sitemap-worker bench")
        _say(f"command:   {_command(args)}")
        _say(f"argv:      {shlex.join(sys.argv)}")
        for line in environment_lines(facts, urls.work):
            _say(line)
        others = await conn.fetchval(bq("other_backends"), connections.APPLICATION_NAME)
        if others:
            _say(
                f"WARNING:   {others} other sitemap-worker session(s) are connected: a running "
                "worker takes the bench's jobs"
            )
        ok = await _drain_section(urls, settings, conn, facts["version_num"], args, repeat)
        await _pickup_section(urls, settings, conn, args)
        await _insert_section(urls, conn, args, repeat)
        return 0 if ok else 1
    finally:
        await conn.close()


async def _drain_section(
    urls: Urls,
    settings: Settings,
    conn: asyncpg.Connection,
    version_num: int,
    args: argparse.Namespace,
    repeat: int,
) -> bool:
    _say()
    _say(
        f"1. Drain: {args.jobs:,} noop jobs inserted in one statement, ANALYZE, then an in-process "
        f"burst worker at concurrency {args.concurrency}; clock from worker start to run() return; "
        f"costs per job over enqueue + drain"
    )
    runs = [
        await drain_ours(urls, settings, conn, version_num, args.jobs, args.concurrency)
        for _ in range(repeat)
    ]
    _say(drain_table(runs))
    _say(
        f"jobs/s {spread([r.rate for r in runs])}; commits/job {_median_cost(runs, 'commits')}; "
        f"write xids/job {_median_cost(runs, 'write_xids')}; WAL syncs/job {_median_cost(runs, 'wal_syncs')}; "
        f"insert of {args.jobs:,} took {spread([r.insert_seconds for r in runs], '.3f')} s"
    )
    for i, r in enumerate(runs, 1):
        _say(f"check run {i}: {r.check}")
    await conn.execute(bq("reset_jobs"))
    return all(r.ok for r in runs)


async def _pickup_section(
    urls: Urls, settings: Settings, conn: asyncpg.Connection, args: argparse.Namespace
) -> None:
    _say()
    _say(
        f"2. Pickup latency: a `worker run --concurrency {args.concurrency}` process, idle and "
        f"listening for 1 s; {args.latency_jobs} jobs inserted one by one, 20 ms apart, autocommit; "
        "claim = jobs.started_at - time the INSERT returned (ms)"
    )
    ms = await pickup_ours(urls, settings, conn, args.latency_jobs, args.concurrency)
    s = latency_summary(ms)
    _say(
        table(
            ("p50", "p95", "p99", "max", "min"),
            [
                (
                    f"{s['p50']:.3f}",
                    f"{s['p95']:.3f}",
                    f"{s['p99']:.3f}",
                    f"{s['max']:.3f}",
                    f"{min(ms):.3f}",
                )
            ],
        )
    )
    _say(
        f"targets: p50 <= 0.3 ms {'met' if s['p50'] <= 0.3 else 'MISSED'}; "
        f"p99 <= 3 ms {'met' if s['p99'] <= 3 else 'MISSED'}"
    )
    negative = sum(m < 0 for m in ms)
    if negative:
        _say(
            f"{negative} job(s) show a claim before the commit: the commit time is when the producer "
            "saw its INSERT return, and started_at is the claiming statement's start, which a "
            "NOTIFY sent at the INSERT's commit can bring before the producer has run again"
        )
    await conn.execute(bq("reset_jobs"))


async def _insert_section(
    urls: Urls, conn: asyncpg.Connection, args: argparse.Namespace, repeat: int
) -> None:
    seconds = max(1, round(args.insert_seconds))
    _say()
    _say(
        f"3. Insert throughput: {pgbench_command(args.insert_clients, seconds)}; one LISTEN session "
        f"on {WAKEUP_CHANNEL}; {repeat} repetitions interleaved, CHECKPOINT after each run"
    )
    pgbench = find_pgbench()
    if pgbench is None:
        _say("skipped: no pgbench next to the server binaries or on PATH")
        return
    _say(f"pgbench:   {pgbench}")
    results = await insert_throughput(
        urls, conn, pgbench, clients=args.insert_clients, seconds=seconds, repeat=repeat
    )
    rows = [
        (
            variant,
            spread([t for t, _ in runs]),
            " ".join(f"{t:,.0f}" for t, _ in runs),
            spread([n / seconds for _, n in runs], ",.1f"),
        )
        for variant, runs in results.items()
    ]
    _say(table(("variant", "TPS median [min..max]", "runs", "wake-ups heard/s"), rows))
    shipped = statistics.median(t for t, _ in results[INSERT_VARIANTS[0]])
    plain = statistics.median(t for t, _ in results[INSERT_VARIANTS[1]])
    ratio = shipped / plain
    pairs = [
        s / p
        for (s, _), (p, _) in zip(
            results[INSERT_VARIANTS[0]], results[INSERT_VARIANTS[1]], strict=True
        )
    ]
    _say(
        f"trigger / no trigger = {ratio:.1%} of medians; per repetition "
        f"{', '.join(f'{r:.0%}' for r in pairs)} (target >= 90%: {'met' if ratio >= 0.9 else 'MISSED'})"
    )
