"""Our worker side by side with procrastinate 3.10.0 and PgQueuer 1.6.0, in one run, on one
server, one database each, by the anchors' method (shared research, anchor-bench.md):

- drain: N no-op jobs inserted in one statement, ANALYZE, then the worker; clock from worker
  start to its return; costs per job over enqueue + drain; repetitions interleaved;
- claim latency: jobs inserted one by one, 20 ms apart, into an idle worker listening for
  1 s; the claiming transaction's now() minus the time the insert call returned. Ours reads
  jobs.started_at with our worker as a separate process; procrastinate reads
  procrastinate_events 'started', PgQueuer pgqueuer_log 'picked' (both run in this process
  and event loop, as in the anchors).

    pip install '.[bench]'          # procrastinate==3.10.0 pgqueuer==1.6.0
    python tests/benchmarks/queue_vs_peers.py [--dsn postgresql://...]

Without --dsn a private PostgreSQL (default durability: fsync on) is started on 127.0.0.1 in
a temporary directory and removed afterwards. With --dsn the role needs CREATEDB; the three
databases it creates (sitemap_bench_*) are dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.benchmarks import queue_bench as bench  # noqa: E402
from worker.database_urls import Urls  # noqa: E402
from worker.migrate import migrate  # noqa: E402
from worker.report import table  # noqa: E402
from worker.settings import Settings  # noqa: E402

CONCURRENCY = 10


@dataclass
class Contender:
    name: str
    config: str
    database: str
    rates: list[float] = field(default_factory=list)
    costs: list[dict[str, float | None]] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)
    ok: bool = True
    claims: list[dict[str, float]] = field(default_factory=list)


def with_database(dsn: str, name: str) -> str:
    return urlsplit(dsn)._replace(path=f"/{name}").geturl()


@contextlib.asynccontextmanager
async def server(dsn: str | None) -> AsyncIterator[str]:
    if dsn:
        yield dsn
        return
    from worker.embedded_pg import EmbeddedPostgres

    tmp = Path(tempfile.mkdtemp(prefix="queue-vs-peers-"))
    tmp.chmod(0o755)  # as root the server runs as an unprivileged account
    pg = EmbeddedPostgres(tmp / "data", tcp=True)
    try:
        yield await asyncio.to_thread(pg.start)
    finally:
        await asyncio.to_thread(pg.stop)
        shutil.rmtree(tmp, ignore_errors=True)


async def wait_listening(conn: asyncpg.Connection, timeout: float = 15.0) -> None:
    """Until a session of this database has run LISTEN (the worker under test)."""

    async def listening() -> bool:
        return bool(
            await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND query ILIKE 'LISTEN%'"
            )
        )

    if not await bench.poll_until(listening, timeout):
        raise RuntimeError("the worker never ran LISTEN")


async def wait_for(
    conn: asyncpg.Connection, sql: str, ids: list[int], timeout: float = 20.0
) -> None:
    """Until `sql` ($1 ids) counts every id."""

    async def counted() -> bool:
        return await conn.fetchval(sql, ids) >= len(ids)

    if not await bench.poll_until(counted, timeout, 0.05):
        raise RuntimeError(f"not all {len(ids)} jobs done after {timeout:.0f} s: {sql}")


async def claim_ms(
    conn: asyncpg.Connection, sql: str, stamped: list[tuple[int, float]]
) -> list[float]:
    """`sql` ($1 ids) returns (id, claim epoch s); result: claim minus commit, in ms."""
    claimed = {r[0]: r[1] for r in await conn.fetch(sql, [i for i, _ in stamped])}
    return [(claimed[i] - committed) * 1000 for i, committed in stamped]


# -- ours -------------------------------------------------------------------------------------


class Ours:
    def __init__(self, dsn: str) -> None:
        self.urls = Urls(dsn, dsn)
        self.settings = Settings(database_url=dsn, listen_database_url=dsn)

    async def setup(self, control: asyncpg.Connection) -> None:
        await migrate(self.urls.direct, self.settings)

    async def drain(self, control: asyncpg.Connection, version: int, jobs: int) -> bench.DrainRun:
        return await bench.drain_ours(self.urls, self.settings, control, version, jobs, CONCURRENCY)

    async def claims(self, control: asyncpg.Connection, count: int) -> list[float]:
        return await bench.pickup_ours(self.urls, self.settings, control, count, CONCURRENCY)


# -- procrastinate ------------------------------------------------------------------------------


class Procrastinate:
    def __init__(self, dsn: str) -> None:
        import procrastinate

        self.app = procrastinate.App(
            connector=procrastinate.PsycopgConnector(conninfo=dsn, min_size=2, max_size=12)
        )

        @self.app.task(name="noop")
        async def noop() -> None:
            return None

        self.noop = noop

    async def setup(self, control: asyncpg.Connection) -> None:
        async with self.app.open_async():
            await self.app.schema_manager.apply_schema_async()

    async def _reset(self, control: asyncpg.Connection) -> None:
        await control.execute("TRUNCATE procrastinate_jobs, procrastinate_workers CASCADE")

    async def drain(self, control: asyncpg.Connection, version: int, jobs: int) -> bench.DrainRun:
        await self._reset(control)
        before = await bench.read_counters(control, version)
        async with self.app.open_async():
            began = time.perf_counter()
            await self.noop.batch_defer_async(*({} for _ in range(jobs)))
            inserted = time.perf_counter() - began
            await control.execute("ANALYZE")
            began = time.perf_counter()
            await self.app.run_worker_async(
                concurrency=CONCURRENCY, wait=False, install_signal_handlers=False
            )
            seconds = time.perf_counter() - began
        await bench.settle_stats(control, None)
        after = await bench.read_counters(control, version)
        done = await control.fetchval(
            "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded' AND attempts <= 1"
        )
        return bench.DrainRun(
            jobs,
            seconds,
            inserted,
            before.per_job(after, jobs),
            f"{done}/{jobs} succeeded",
            done == jobs,
        )

    async def claims(self, control: asyncpg.Connection, count: int) -> list[float]:
        await self._reset(control)
        async with self.app.open_async():
            worker = asyncio.create_task(
                self.app.run_worker_async(
                    concurrency=CONCURRENCY, wait=True, install_signal_handlers=False
                )
            )
            try:
                await wait_listening(control)
                stamped = await bench.paced_inserts(self.noop.defer_async, count)
                await wait_for(
                    control,
                    "SELECT count(*) FROM procrastinate_jobs "
                    "WHERE id = ANY($1) AND status = 'succeeded'",
                    [i for i, _ in stamped],
                )
            finally:
                worker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await worker
        return await claim_ms(
            control,
            "SELECT job_id, extract(epoch FROM at)::float8 FROM "
            "procrastinate_events WHERE type = 'started' AND job_id = ANY($1)",
            stamped,
        )


# -- PgQueuer ---------------------------------------------------------------------------------


class PgQueuer:
    def __init__(self, dsn: str, batch_size: int, max_tasks: int | None) -> None:
        self.dsn = dsn
        self.run_options: dict[str, Any] = {"batch_size": batch_size}
        if max_tasks:
            self.run_options["max_concurrent_tasks"] = max_tasks

    async def setup(self, control: asyncpg.Connection) -> None:
        from pgqueuer import AsyncpgDriver, Queries

        if not await control.fetchval("SELECT to_regclass('pgqueuer') IS NOT NULL"):
            await Queries(AsyncpgDriver(control)).install()

    @contextlib.asynccontextmanager
    async def _manager(self) -> AsyncIterator[Any]:
        """A QueueManager with a no-op entrypoint on its own connection."""
        from pgqueuer import AsyncpgDriver, Queries, QueueManager

        conn = await asyncpg.connect(self.dsn)
        try:
            qm = QueueManager(Queries(AsyncpgDriver(conn)))

            @qm.entrypoint("noop")
            async def noop(job: Any) -> None:
                return None

            yield qm
        finally:
            await conn.close()

    @contextlib.asynccontextmanager
    async def _producer(self) -> AsyncIterator[Any]:
        from pgqueuer import AsyncpgDriver, Queries

        conn = await asyncpg.connect(self.dsn)
        try:
            yield Queries(AsyncpgDriver(conn))
        finally:
            await conn.close()

    async def _reset(self, control: asyncpg.Connection) -> None:
        await control.execute("TRUNCATE pgqueuer, pgqueuer_log, pgqueuer_statistics")

    @staticmethod
    async def _wait_listening(qm: Any, timeout: float = 15.0) -> None:
        """Its LISTEN shares the connection with its queries, so pg_stat_activity cannot
        show it: a NOTIFY round trip through its own health check proves it instead."""
        from pgqueuer.errors import FailingListenerError

        deadline = time.monotonic() + timeout
        while True:
            try:
                await qm.listener_healthy(timeout=timedelta(seconds=0.5))
                return
            except FailingListenerError:
                if time.monotonic() > deadline:
                    raise

    async def drain(self, control: asyncpg.Connection, version: int, jobs: int) -> bench.DrainRun:
        from pgqueuer.domain.types import QueueExecutionMode

        await self._reset(control)
        before = await bench.read_counters(control, version)
        async with self._producer() as queries:
            began = time.perf_counter()
            await queries.enqueue(["noop"] * jobs, [None] * jobs, [0] * jobs)
            inserted = time.perf_counter() - began
        await control.execute("ANALYZE")
        async with self._manager() as qm:
            began = time.perf_counter()
            await qm.run(mode=QueueExecutionMode.drain, **self.run_options)
            seconds = time.perf_counter() - began
        await bench.settle_stats(control, None)
        after = await bench.read_counters(control, version)
        row = await control.fetchrow(
            "SELECT count(*) FILTER (WHERE status = 'successful') AS ok, "
            "count(*) FILTER (WHERE status = 'picked') AS picked, "
            "(SELECT count(*) FROM pgqueuer) AS left FROM pgqueuer_log"
        )
        ok = row["ok"] == row["picked"] == jobs and row["left"] == 0
        return bench.DrainRun(
            jobs,
            seconds,
            inserted,
            before.per_job(after, jobs),
            f"{row['ok']}/{jobs} successful, {row['picked']} picks, {row['left']} left",
            ok,
        )

    async def claims(self, control: asyncpg.Connection, count: int) -> list[float]:
        await self._reset(control)
        async with self._manager() as qm, self._producer() as queries:
            worker = asyncio.create_task(qm.run(**self.run_options))
            try:
                await self._wait_listening(qm)

                async def enqueue() -> int:
                    return (await queries.enqueue("noop", None))[0]

                stamped = await bench.paced_inserts(enqueue, count)
                await wait_for(
                    control,
                    "SELECT count(*) FROM pgqueuer_log "
                    "WHERE job_id = ANY($1) AND status = 'successful'",
                    [i for i, _ in stamped],
                )
            finally:
                qm.shutdown.set()
                await worker
        return await claim_ms(
            control,
            "SELECT job_id, extract(epoch FROM created)::float8 FROM "
            "pgqueuer_log WHERE status = 'picked' AND job_id = ANY($1)",
            stamped,
        )


# -- the run ----------------------------------------------------------------------------------


async def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    # "App is instantiated in the main Python module": true, and harmless here.
    logging.getLogger("procrastinate.blueprints").setLevel(logging.ERROR)
    contenders = [
        Contender(
            "sitemap-worker",
            f"concurrency {CONCURRENCY}; claim: separate process",
            "sitemap_bench_ours",
        ),
        Contender(
            "procrastinate 3.10.0",
            f"concurrency={CONCURRENCY}, pool 2..12",
            "sitemap_bench_procrastinate",
        ),
        Contender(
            "PgQueuer 1.6.0", "defaults: 1 QM, batch 10, no task cap", "sitemap_bench_pgqueuer"
        ),
        Contender("PgQueuer 1.6.0", "1 QM, batch 5, max 10 tasks", "sitemap_bench_pgqueuer"),
    ]
    async with server(args.dsn) as base:
        admin = await asyncpg.connect(base)
        drivers: list[Any] = []
        controls: dict[str, asyncpg.Connection] = {}
        try:
            for name in dict.fromkeys(c.database for c in contenders):
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                await admin.execute(f'CREATE DATABASE "{name}"')
                controls[name] = await bench.control_connection(with_database(base, name))
            facts = await controls[contenders[0].database].fetchrow(bench.bq("server_facts"))
            print("queue_vs_peers:", " ".join(sys.argv), flush=True)
            for line in bench.environment_lines(facts, base):
                print(line, flush=True)
            print(
                f"method:    drain {args.jobs:,} jobs x {args.repeat} interleaved; claim latency "
                f"{args.latency_jobs} jobs 20 ms apart x {args.repeat} interleaved",
                flush=True,
            )
            drivers = [
                Ours(with_database(base, contenders[0].database)),
                Procrastinate(with_database(base, contenders[1].database)),
                PgQueuer(with_database(base, contenders[2].database), 10, None),
                PgQueuer(with_database(base, contenders[3].database), 5, 10),
            ]
            for c, d in zip(contenders, drivers, strict=True):
                await d.setup(controls[c.database])
            version = facts["version_num"]
            for rep in range(args.repeat):
                for c, d in zip(contenders, drivers, strict=True):
                    run = await d.drain(controls[c.database], version, args.jobs)
                    c.rates.append(run.rate)
                    c.costs.append(run.cost)
                    c.checks.append(run.check)
                    c.ok &= run.ok
                    print(
                        f"drain {rep + 1}/{args.repeat} {c.name} ({c.config}): {run.rate:,.0f} jobs/s "
                        f"in {run.seconds:.2f} s (enqueue {run.insert_seconds:.2f} s); {run.check}",
                        flush=True,
                    )
            for rep in range(args.repeat):
                for c, d in zip(contenders, drivers, strict=True):
                    summary = bench.latency_summary(
                        await d.claims(controls[c.database], args.latency_jobs)
                    )
                    c.claims.append(summary)
                    print(
                        f"claim {rep + 1}/{args.repeat} {c.name} ({c.config}): "
                        + ", ".join(f"{k} {v:.3f} ms" for k, v in summary.items()),
                        flush=True,
                    )
        finally:
            for conn in controls.values():
                await conn.close()
            if args.dsn and not args.keep_databases:
                for name in controls:
                    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin.close()
    report(contenders)
    return 0 if all(c.ok for c in contenders) else 1


def _costs(c: Contender, key: str, fmt: str = ".2f") -> str:
    values = [x[key] for x in c.costs if x[key] is not None]
    return bench.spread(values, fmt) if values else "n/a"


def report(contenders: list[Contender]) -> None:
    rows = []
    for c in contenders:
        claim = {
            k: bench.spread([s[k] for s in c.claims], ".2f") for k in ("p50", "p95", "p99", "max")
        }
        rows.append(
            (
                c.name,
                c.config,
                bench.spread(c.rates),
                _costs(c, "commits"),
                _costs(c, "write_xids"),
                _costs(c, "wal_syncs"),
                claim["p50"],
                claim["p95"],
                claim["p99"],
                claim["max"],
            )
        )
    print()
    print(
        table(
            (
                "worker",
                "config",
                "jobs/s",
                "commits/job",
                "write xids/job",
                "WAL syncs/job",
                "claim p50 ms",
                "claim p95 ms",
                "claim p99 ms",
                "claim max ms",
            ),
            rows,
        )
    )
    ours, pgq = contenders[0], contenders[2]
    ratio = statistics.median(ours.rates) / statistics.median(pgq.rates)
    per_rep = ", ".join(f"{a / b:.2f}x" for a, b in zip(ours.rates, pgq.rates, strict=True))
    p50 = statistics.median(s["p50"] for s in ours.claims)
    p99 = statistics.median(s["p99"] for s in ours.claims)
    pgq_p50 = statistics.median(s["p50"] for s in pgq.claims)
    print()
    print(
        f"drain, ours / PgQueuer defaults: {ratio:.2f}x of medians (per repetition {per_rep}); "
        f"target >= 2x: {'met' if ratio >= 2 else 'MISSED'}"
    )
    print(
        f"claim, ours: p50 {p50:.3f} ms (target <= PgQueuer's {pgq_p50:.3f}: "
        f"{'met' if p50 <= pgq_p50 else 'MISSED'}), "
        f"p99 {p99:.3f} ms (target <= 3: {'met' if p99 <= 3 else 'MISSED'})"
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", help="server to use (default: a private one in a temp dir)")
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--latency-jobs", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep-databases", action="store_true", help="with --dsn: leave them")
    return parser.parse_args()


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
