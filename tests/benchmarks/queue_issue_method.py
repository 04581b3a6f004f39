"""Issue 20's own method, beside queue_vs_peers.py: real worker processes, pre-inserted jobs,
and a clock read from outside, on one private server, each contender in its own database.

- drain: the worker process is idle and listening; one `INSERT ... SELECT generate_series(1,
  N)` (autocommit) into a freshly truncated and vacuumed table; then `count(*)` of completed
  jobs polled every 50 ms from another connection; rate = N / (first poll that counts N -
  the INSERT's return). The 50 ms poll makes each figure up to 50 ms long (~3% at 1.5 s).
- latency: 200 single autocommit INSERTs 20 ms apart into the idle worker; the claim time
  (ours: jobs.started_at, the claiming statement's time; PgQueuer: its pgqueuer_log
  'picked' row) minus the client's time.time() right after the INSERT returned.

Contenders: `sitemap-worker run --concurrency 10` (this checkout; with `--log-level WARNING`
also the same without its INFO lines), optionally the same from
another source tree (`--before DIR`, e.g. `git archive <commit> | tar -x -C DIR`, migrated
with its own migrations), and PgQueuer 1.6.0 with its defaults (one QueueManager, batch
10, no task cap) in a process of its own (pgqueuer_noop_worker.py). Rounds are interleaved
(A B C A B C ...) and medians reported: the machine is shared.

    pip install '.[bench]'
    python -m tests.benchmarks.queue_issue_method [--before /tmp/queue-before] [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import asyncpg

from tests.benchmarks import queue_bench as bench
from tests.benchmarks.statements import bq
from worker.report import table

if TYPE_CHECKING:
    from worker.embedded_pg import EmbeddedPostgres

ROOT = Path(__file__).resolve().parents[2]
CONCURRENCY = 10


def with_database(dsn: str, name: str) -> str:
    return urlsplit(dsn)._replace(path=f"/{name}").geturl()


@contextlib.asynccontextmanager
async def server(kind: type[EmbeddedPostgres] | None = None) -> AsyncIterator[str]:
    """A private server (fsync on) over TCP in a temporary directory; `kind` may be a
    subclass with settings of its own."""
    from worker.embedded_pg import EmbeddedPostgres

    tmp = Path(tempfile.mkdtemp(prefix="queue-issue-method-"))
    tmp.chmod(0o755)  # as root the server runs as an unprivileged account
    pg = (kind or EmbeddedPostgres)(tmp / "data", tcp=True)
    try:
        yield await asyncio.to_thread(pg.start)
    finally:
        await asyncio.to_thread(pg.stop)
        shutil.rmtree(tmp, ignore_errors=True)


class Process:
    """A worker child process whose stderr goes to a file (read only to see it is ready)."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path, log: Path) -> None:
        self.argv, self.env, self.cwd, self.log = argv, env, cwd, log
        self.proc: asyncio.subprocess.Process | None = None

    async def start(
        self,
        ready_marker: str,
        timeout: float = 30.0,
        listening: Callable[[], Awaitable[bool]] | None = None,
    ) -> None:
        """Ready when the marker is in its log or, for a worker that logs no INFO line,
        when `listening` (its LISTEN seen by the server) says so."""
        with self.log.open("wb") as sink:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv,
                env=self.env,
                cwd=self.cwd,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=sink,
                stderr=sink,
            )

        def ready() -> bool:
            if self.proc is not None and self.proc.returncode is not None:
                raise RuntimeError(f"{self.argv} exited:\n{self.log.read_text()[-3000:]}")
            return ready_marker in self.log.read_text(errors="replace")

        deadline = time.monotonic() + timeout
        while not (await listening() if listening else ready()):
            ready()  # raises if the process exited
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.argv} not ready:\n{self.log.read_text()[-3000:]}")
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)  # idle and listening, as the method says

    async def stop(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.terminate()
        try:
            await asyncio.wait_for(self.proc.wait(), 20)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


@dataclass
class Contender:
    name: str
    database: str
    rates: list[float] = field(default_factory=list)
    claims: list[dict[str, float]] = field(default_factory=list)
    ok: bool = True


class Ours(Contender):
    def __init__(self, name: str, database: str, tree: Path, log_level: str | None = None) -> None:
        super().__init__(name, database)
        self.tree, self.log_level = tree, log_level

    def _env(self, dsn: str) -> dict[str, str]:
        keep = {k: v for k, v in os.environ.items() if not k.startswith(("WORKER_", "PG"))}
        level = {"WORKER_LOG_LEVEL": self.log_level} if self.log_level else {}
        return (
            keep
            | level
            | {
                "PYTHONPATH": str(self.tree),
                "DATABASE_URL": dsn,
                "LISTEN_DATABASE_URL": dsn,
            }
        )

    async def setup(self, dsn: str, control: asyncpg.Connection) -> None:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "worker", "migrate", env=self._env(dsn), cwd=self.tree
        )
        if await proc.wait() != 0:
            raise RuntimeError(f"migrate failed in {self.tree}")

    def worker(self, dsn: str, log: Path) -> Process:
        argv = [sys.executable, "-m", "worker", "run", "--concurrency", str(CONCURRENCY)]
        return Process([*argv, "--no-migrate"], self._env(dsn), self.tree, log)

    ready_marker = " ready: "
    listening_sql = (
        "SELECT count(*) > 0 FROM pg_stat_activity"
        " WHERE datname = current_database() AND query LIKE 'LISTEN %'"
    )
    reset = "TRUNCATE jobs CASCADE"
    vacuum = "VACUUM ANALYZE jobs"
    bulk = "INSERT INTO jobs (job_type, payload) SELECT 'noop', '{}' FROM generate_series(1, $1)"
    done = "SELECT count(*) FROM jobs WHERE status = 'completed'"
    one = "INSERT INTO jobs (job_type, payload) VALUES ('noop', '{}') RETURNING id"
    done_ids = "SELECT count(*) FROM jobs WHERE id = ANY($1) AND status = 'completed'"
    claimed_at = "SELECT id, extract(epoch FROM started_at)::float8 FROM jobs WHERE id = ANY($1)"


class PgQueuer(Contender):
    async def setup(self, dsn: str, control: asyncpg.Connection) -> None:
        from pgqueuer import AsyncpgDriver, Queries

        await Queries(AsyncpgDriver(control)).install()

    def worker(self, dsn: str, log: Path) -> Process:
        script = [sys.executable, "-m", "tests.benchmarks.pgqueuer_noop_worker", dsn]
        env = dict(os.environ) | {"PYTHONPATH": str(ROOT)}
        return Process(script, env, ROOT, log)

    ready_marker = "pgqueuer worker ready"
    reset = "TRUNCATE pgqueuer, pgqueuer_log, pgqueuer_statistics"
    vacuum = "VACUUM ANALYZE pgqueuer"
    bulk = (
        "INSERT INTO pgqueuer (priority, entrypoint, payload, status) "
        "SELECT 0, 'noop', NULL, 'queued' FROM generate_series(1, $1)"
    )
    done = "SELECT count(*) FROM pgqueuer_log WHERE status = 'successful'"
    one = (
        "INSERT INTO pgqueuer (priority, entrypoint, payload, status) "
        "VALUES (0, 'noop', NULL, 'queued') RETURNING id"
    )
    done_ids = "SELECT count(*) FROM pgqueuer_log WHERE job_id = ANY($1) AND status = 'successful'"
    claimed_at = (
        "SELECT job_id, extract(epoch FROM created)::float8 FROM pgqueuer_log "
        "WHERE status = 'picked' AND job_id = ANY($1)"
    )


def listening_check(
    c: Ours | PgQueuer, control: asyncpg.Connection
) -> Callable[[], Awaitable[bool]] | None:
    """A quiet worker (WORKER_LOG_LEVEL above INFO) logs no ready line: wait for its LISTEN."""
    if not isinstance(c, Ours) or not c.log_level:
        return None

    async def check() -> bool:
        return bool(await control.fetchval(c.listening_sql))

    return check


async def drain(
    c: Ours | PgQueuer, dsn: str, control: asyncpg.Connection, jobs: int, log: Path
) -> float:
    await control.execute(c.reset)
    await control.execute(c.vacuum)
    worker = c.worker(dsn, log)
    await worker.start(c.ready_marker, listening=listening_check(c, control))
    try:
        await control.execute(c.bulk, jobs)
        committed = time.perf_counter()
        deadline = committed + 120
        while await control.fetchval(c.done) < jobs:
            if time.perf_counter() > deadline:
                raise RuntimeError(f"{c.name}: drain not done after 120 s")
            await asyncio.sleep(0.05)
        return jobs / (time.perf_counter() - committed)
    finally:
        await worker.stop()


async def latency(
    c: Ours | PgQueuer, dsn: str, control: asyncpg.Connection, count: int, log: Path
) -> list[float]:
    await control.execute(c.reset)
    await control.execute(c.vacuum)
    producer = await asyncpg.connect(dsn, statement_cache_size=0)
    worker = c.worker(dsn, log)
    await worker.start(c.ready_marker, listening=listening_check(c, control))
    try:
        stamped = await bench.paced_inserts(lambda: producer.fetchval(c.one), count, settle=0)
        ids = [i for i, _ in stamped]

        async def all_done() -> bool:
            return await control.fetchval(c.done_ids, ids) >= len(ids)

        if not await bench.poll_until(all_done, 30, 0.05):
            raise RuntimeError(f"{c.name}: latency jobs not all done after 30 s")
        claimed = {r[0]: r[1] for r in await control.fetch(c.claimed_at, ids)}
    finally:
        await worker.stop()
        await producer.close()
    return [(claimed[i] - t) * 1000 for i, t in stamped]


async def main(args: argparse.Namespace) -> int:
    contenders: list[Ours | PgQueuer] = []
    if args.before:
        contenders.append(Ours("sitemap-worker, before", "issue_ours_before", Path(args.before)))
    contenders.append(Ours("sitemap-worker, this checkout", "issue_ours", ROOT))
    if args.log_level:
        name = f"sitemap-worker, this checkout, WORKER_LOG_LEVEL={args.log_level}"
        contenders.append(Ours(name, "issue_ours_quiet", ROOT, args.log_level))
    contenders.append(PgQueuer("PgQueuer 1.6.0, defaults", "issue_pgqueuer"))
    logs = Path(tempfile.mkdtemp(prefix="queue-issue-logs-"))
    async with server() as base:
        admin = await asyncpg.connect(base)
        controls: dict[str, asyncpg.Connection] = {}
        try:
            for c in contenders:
                await admin.execute(f'CREATE DATABASE "{c.database}"')
                controls[c.database] = await bench.control_connection(
                    with_database(base, c.database)
                )
                await c.setup(with_database(base, c.database), controls[c.database])
            facts = await controls[contenders[-1].database].fetchrow(bq("server_facts"))
            print("queue_issue_method:", " ".join(sys.argv), flush=True)
            for line in bench.environment_lines(facts, base):
                print(line, flush=True)
            for rep in range(args.repeat):
                for c in contenders:
                    dsn = with_database(base, c.database)
                    log = logs / f"{c.database}-drain-{rep}.log"
                    rate = await drain(c, dsn, controls[c.database], args.jobs, log)
                    c.rates.append(rate)
                    print(f"drain {rep + 1}/{args.repeat} {c.name}: {rate:,.0f} jobs/s", flush=True)
            for rep in range(args.repeat):
                for c in contenders:
                    dsn = with_database(base, c.database)
                    log = logs / f"{c.database}-latency-{rep}.log"
                    ms = await latency(c, dsn, controls[c.database], args.latency_jobs, log)
                    summary = bench.latency_summary(ms)
                    c.claims.append(summary)
                    print(
                        f"claim {rep + 1}/{args.repeat} {c.name}: "
                        + ", ".join(f"{k} {v:.3f} ms" for k, v in summary.items()),
                        flush=True,
                    )
        finally:
            for conn in controls.values():
                await conn.close()
            await admin.close()
    shutil.rmtree(logs, ignore_errors=True)
    report(contenders)
    return 0


def report(contenders: list[Ours | PgQueuer]) -> None:
    rows = [
        (
            c.name,
            bench.spread(c.rates),
            *(bench.spread([s[k] for s in c.claims], ".2f") for k in ("p50", "p95", "p99", "max")),
        )
        for c in contenders
    ]
    print()
    print(
        table(
            ("worker", "drain jobs/s", "claim p50 ms", "p95 ms", "p99 ms", "max ms"),
            rows,
        )
    )
    pgq = contenders[-1]
    for c in contenders[:-1]:
        ratio = statistics.median(c.rates) / statistics.median(pgq.rates)
        p50 = statistics.median(s["p50"] for s in c.claims)
        pgq_p50 = statistics.median(s["p50"] for s in pgq.claims)
        p99 = statistics.median(s["p99"] for s in c.claims)
        print(
            f"{c.name}: drain {ratio:.2f}x PgQueuer's (target >= 2x); claim p50 "
            f"{p50:.3f} ms vs PgQueuer's {pgq_p50:.3f} ms; p99 {p99:.3f} ms (target < 3)"
        )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", help="another source tree of sitemap-worker to compare")
    parser.add_argument(
        "--log-level",
        choices=("WARNING", "ERROR"),
        help="also run this checkout with WORKER_LOG_LEVEL set (what the INFO lines cost)",
    )
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--latency-jobs", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    return parser.parse_args()


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
