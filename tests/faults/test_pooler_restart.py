"""PgBouncer (transaction pool mode) fails under a real worker while jobs are in flight: the
process is killed and restarted, shut down safely and restarted, told to KILL the database's
connections from its admin console, or its server connections are terminated in PostgreSQL.

Why: with DATABASE_URL on a pooler, every phase, claim, heartbeat and outcome write can meet
a dead pooled connection. The worker must survive, a job hit mid-phase must be retried (with
a readable error) rather than lost or left `processing`, every final status must be written
once the database is reachable again, and no job may end twice. LISTEN stays direct, as the
README requires, so the listener never notices the pooler.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import asyncpg
import pytest

from tests.acceptance.conftest import FAST
from tests.support.pgbouncer import require_pgbouncer
from tests.support.processes import WorkerProcess
from tests.support.restartable import AdminPgBouncer
from tests.support.sites import Site
from tests.support.waits import StatusWatcher
from worker.embedded_pg import EmbeddedPostgres

Spawn = Callable[..., Awaitable[WorkerProcess]]
NS = 'xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"'

CHILDREN = 8  # child sitemaps per site: each a phase to open, one per URL chunk, one to finish
URLS_PER_CHILD = 2500  # two chunks (store.CHUNK is 2000): more phases per file
CHILD_DELAY = 0.25  # seconds each child takes to answer: keeps the scans in flight for a while
# A connection error is transient: the job goes back to pending, and the message says what
# broke (asyncpg's exception name, or the pooler's/server's own message).
CONNECTION_ERROR = re.compile(
    r"ConnectionDoesNotExistError|ConnectionResetError|ConnectionRefusedError|InterfaceError|"
    r"OSError|TimeoutError|connection|database error (08|57P0)",
    re.IGNORECASE,
)
_workdirs = itertools.count(1)


@pytest.fixture
def pooler(pg_server: EmbeddedPostgres, pg_base: Path) -> Iterator[AdminPgBouncer]:
    """A PgBouncer of this test's own (the session one is shared: never restarted)."""
    require_pgbouncer()
    bouncer = AdminPgBouncer(
        pg_base / f"fault-bouncer-{next(_workdirs)}", pg_server.port, pool_size=4
    )
    bouncer.start()
    yield bouncer
    bouncer.kill()


@pytest.fixture
def worker_env(pooler: AdminPgBouncer, database: str, direct_dsn: str) -> dict[str, str]:
    """Job work through the pooler, LISTEN direct. Enough lease that one pooler outage does
    not also expire leases (that is test_database_restart's subject)."""
    return {
        **FAST,
        "DATABASE_URL": pooler.dsn(database),
        "LISTEN_DATABASE_URL": direct_dsn,
        "WORKER_ALLOW_PRIVATE_NETWORKS": "true",
        "WORKER_CONCURRENCY": "6",
        "WORKER_LEASE": "15",
        "WORKER_POLL_INTERVAL": "0.3",
    }


@pytest.fixture
async def site() -> AsyncIterator[Site]:
    """A site whose scan takes a couple of seconds of phases: robots.txt names an index of
    slow children with a few thousand URLs each."""
    async with Site() as s:
        o = s.origin
        s.add("/robots.txt", f"Sitemap: {o}/index.xml\n")
        children = "".join(f"<sitemap><loc>{o}/c{n}.xml</loc></sitemap>" for n in range(CHILDREN))
        s.add("/index.xml", f'<?xml version="1.0"?><sitemapindex {NS}>{children}</sitemapindex>')
        for n in range(CHILDREN):
            urls = "".join(f"<url><loc>{o}/c{n}/p{i}</loc></url>" for i in range(URLS_PER_CHILD))
            s.add(
                f"/c{n}.xml",
                f'<?xml version="1.0"?><urlset {NS}>{urls}</urlset>',
                delay=CHILD_DELAY,
            )
        yield s


async def insert_jobs(conn: asyncpg.Connection, site: Site, scans: int, noops: int) -> list[int]:
    """Scans (many short phases) and noops (no phase: only a claim, heartbeats, an outcome).
    Five attempts: one fault may cost a job an attempt, or two with an in-doubt claim."""
    ids = []
    for _ in range(scans):
        ids.append(
            await conn.fetchval(
                "INSERT INTO jobs (job_type, payload, max_attempts) VALUES ('sitemap_scan', $1::jsonb, 5)"
                " RETURNING id",
                json.dumps({"domain": site.origin}),
            )
        )
    for _ in range(noops):
        ids.append(
            await conn.fetchval(
                "INSERT INTO jobs (job_type, payload, max_attempts) VALUES ('noop', '{\"seconds\": 1.5}', 5)"
                " RETURNING id"
            )
        )
    return ids


async def wait_for_phases(watcher: StatusWatcher, ids: list[int], at_least: int) -> None:
    """Until the scans have written some rows: the fault then lands mid-scan. Rows are not
    status changes, so this is a bounded poll (no event to await)."""
    async with asyncio.timeout(20):
        while (
            await watcher.conn.fetchval(
                "SELECT count(*) FROM sitemap_urls WHERE job_id = ANY($1::bigint[])", ids
            )
            < at_least
        ):
            await asyncio.sleep(0.02)


async def check_every_job_ended_once(
    worker: WorkerProcess,
    watcher: StatusWatcher,
    ids: list[int],
    scan_ids: list[int],
    timeout: float = 60,
) -> Counter[str]:
    """Every job completed, its completion written and announced exactly once, the scans'
    stored data whole; returns what the worker logged about retries and write failures."""
    rows = await watcher.wait_for(ids, "completed", timeout=timeout)
    announced = Counter(job for job, status in watcher.events if status == "completed")
    for row in rows:
        assert announced[row["id"]] == 1, (dict(row), watcher.events)
        assert row["error"] is None and row["progress"] == 1
        completed_line = rf"\bjob {row['id']} \S+ completed in "
        await worker.wait_for_line(completed_line, timeout=5)  # logged just after the commit
        assert len([line for line in worker.lines if re.search(completed_line, line)]) == 1
    for job_id in scan_ids:  # a retried scan stores nothing twice and loses nothing
        stored = await watcher.conn.fetchval(
            "SELECT count(*) FROM sitemap_urls WHERE job_id = $1", job_id
        )
        assert stored == CHILDREN * URLS_PER_CHILD
    retries = [
        line for line in worker.lines if re.search(r"failed \(attempt \d+/\d+\), retry in", line)
    ]
    for line in retries:
        assert CONNECTION_ERROR.search(line.split(": ", 1)[-1]), line
    assert not [
        line for line in worker.lines if "Traceback" in line or "never retrieved" in line
    ], worker.log()
    assert worker.proc.returncode is None
    return Counter(
        {
            "retried": len(retries),
            "outcome_write_waits": sum(
                "cannot write job outcomes yet" in line for line in worker.lines
            ),
            "claim_failures": sum("cannot claim jobs" in line for line in worker.lines),
            "renew_failures": sum("cannot renew leases" in line for line in worker.lines),
            "attempts_over_1": sum(1 for r in rows if r["attempts"] > 1),
        }
    )


async def assert_results_count_stored_urls(conn: asyncpg.Connection, scan_ids: list[int]) -> None:
    """A scan's result says how many URLs the job stored, also when an earlier, interrupted
    attempt stored some of them (the retry finds them already there)."""
    rows = await conn.fetch(
        "SELECT j.id, j.attempts, (j.result->>'url_count')::int AS reported,"
        "       (SELECT count(*) FROM sitemap_urls u WHERE u.job_id = j.id) AS stored"
        "  FROM jobs j WHERE j.id = ANY($1::bigint[]) ORDER BY j.id",
        scan_ids,
    )
    wrong = [dict(r) for r in rows if r["reported"] != r["stored"]]
    assert not wrong, f"result url_count differs from the rows stored: {wrong}"


def hit(counts: Counter[str]) -> bool:
    """Whether the fault touched the worker at all (else the test proved nothing). With the
    scans' files slow to answer, the pooler can be down while no phase runs: then only the
    heartbeat meets it."""
    return (
        counts["retried"]
        + counts["outcome_write_waits"]
        + counts["claim_failures"]
        + counts["renew_failures"]
        > 0
    )


async def terminate_pooled_backends(conn: asyncpg.Connection, database: str) -> int:
    """pg_terminate_backend of every server connection PgBouncer holds for the worker: it
    sets the worker's application_name on them. The listener (`sitemap-worker-listener`)
    and the test's own connections are direct, and spared."""
    return await conn.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
        " WHERE datname = $1 AND application_name = 'sitemap-worker'",
        database,
    )


async def until_done_or_dead(
    worker: WorkerProcess, done: Awaitable[list[asyncpg.Record]], conn: asyncpg.Connection
) -> list[asyncpg.Record]:
    """The awaited rows, or at once a failure that says the worker died (and why) or what
    was left unfinished, instead of a bare timeout."""
    waiting = asyncio.ensure_future(done)
    exited = asyncio.ensure_future(worker.proc.wait())
    await asyncio.wait([waiting, exited], return_when=asyncio.FIRST_COMPLETED)
    if waiting.done() and not waiting.exception():
        exited.cancel()
        return waiting.result()
    waiting.cancel()
    exited.cancel()
    left = await conn.fetch(
        "SELECT status, count(*) AS n, max(attempts) AS max_attempts"
        " FROM jobs GROUP BY status ORDER BY status"
    )
    state = (
        f"worker exited with {worker.proc.returncode}"
        if worker.proc.returncode is not None
        else "jobs left unfinished"
    )
    raise AssertionError(f"{state}: {[dict(r) for r in left]}\n{worker.log()[-6000:]}")


# -- short variants -------------------------------------------------------------------------------


async def test_pooler_killed_and_restarted_mid_scan(
    spawn: Spawn,
    pooler: AdminPgBouncer,
    site: Site,
    direct: asyncpg.Connection,
    watcher: StatusWatcher,
) -> None:
    """SIGKILL PgBouncer while six jobs run (four scans mid-phase, two noops), keep it down a
    second, start it again on the same port."""
    worker = await spawn("run")
    scans = await insert_jobs(direct, site, scans=4, noops=0)
    noops = await insert_jobs(direct, site, scans=0, noops=2)
    await wait_for_phases(watcher, scans, at_least=2000)
    pooler.kill()
    await worker.wait_for_line(r"cannot (claim|renew|write)|failed \(attempt", timeout=10)
    await asyncio.to_thread(pooler.start)
    counts = await check_every_job_ended_once(worker, watcher, scans + noops, scans)
    print(f"\n[kill] {dict(counts)}")
    assert hit(counts)
    await assert_results_count_stored_urls(direct, scans)


async def test_pooled_server_connections_terminated_mid_scan(
    spawn: Spawn,
    pooler: AdminPgBouncer,
    site: Site,
    database: str,
    direct: asyncpg.Connection,
    watcher: StatusWatcher,
) -> None:
    """pg_terminate_backend of PgBouncer's server connections, three times in a row while the
    scans write: the pooler stays up and reconnects, the worker's jobs hit mid-transaction
    are retried."""
    worker = await spawn("run")
    scans = await insert_jobs(direct, site, scans=4, noops=2)
    terminated = 0
    for at_least in (1000, 4000, 8000):
        await wait_for_phases(watcher, scans[:4], at_least=at_least)
        terminated += await terminate_pooled_backends(direct, database)
    counts = await check_every_job_ended_once(worker, watcher, scans, scans[:4])
    print(f"\n[terminate] {terminated} server connections terminated; {dict(counts)}")
    assert terminated >= 3
    await assert_results_count_stored_urls(direct, scans[:4])


async def test_worker_survives_a_storm_of_terminated_pooled_connections(
    spawn: Spawn,
    pooler: AdminPgBouncer,
    database: str,
    direct: asyncpg.Connection,
    watcher: StatusWatcher,
) -> None:
    """While 600 short jobs stream through the pooler (claims, heartbeats and batched outcome
    writes back to back), PgBouncer's server connections are terminated every 30 ms for 4 s.
    Some land between two statements of a transaction, where the driver sees an unsolicited
    FATAL: whatever exception that surfaces as, the claim loop, the heartbeat and the outcome
    writer must treat it as a connection failure and carry on. The process lives, and every
    job completes exactly once."""
    worker = await spawn("run", WORKER_CONCURRENCY="8", WORKER_LOG_LEVEL="WARNING", ready=False)
    ids = await direct.fetch(
        "INSERT INTO jobs (job_type, payload, max_attempts)"
        " SELECT 'noop', '{\"seconds\": 0.05}', 10 FROM generate_series(1, 600) RETURNING id"
    )
    ids = [r["id"] for r in ids]
    await watcher.wait_until("SELECT count(*) > 0 FROM jobs WHERE status = 'completed'", timeout=15)
    terminated = 0
    loop = asyncio.get_running_loop()
    storm_ends = loop.time() + 4.0
    while loop.time() < storm_ends and worker.proc.returncode is None:
        terminated += await terminate_pooled_backends(direct, database)
        await asyncio.sleep(0.03)  # the fault's own rhythm, not a wait for an event
    rows = await until_done_or_dead(
        worker, watcher.wait_for(ids, ("completed", "failed"), timeout=30), direct
    )
    ended = Counter(job for job, status in watcher.events if status in ("completed", "failed"))
    print(
        f"\n[storm] {terminated} server connections terminated; "
        f"attempts>1: {sum(r['attempts'] > 1 for r in rows)}; worker lines: {len(worker.lines)}"
    )
    assert worker.proc.returncode is None, worker.log()[-5000:]
    assert not [
        line for line in worker.lines if "Traceback" in line or "never retrieved" in line
    ], worker.log()[-5000:]
    assert [r["id"] for r in rows if r["status"] != "completed"] == []
    assert all(ended[j] == 1 for j in ids)
    assert terminated > 10


# -- long variants --------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("how", ["kill", "safe"])
async def test_pooler_restarted_repeatedly(
    spawn: Spawn,
    pooler: AdminPgBouncer,
    site: Site,
    direct: asyncpg.Connection,
    watcher: StatusWatcher,
    how: str,
) -> None:
    """Five pooler restarts (SIGKILL, or SIGINT's safe shutdown) while twelve scans and six
    noops flow through two workers."""
    workers = [await spawn("run"), await spawn("run")]
    scans = await insert_jobs(direct, site, scans=12, noops=0)
    noops = await insert_jobs(direct, site, scans=0, noops=6)
    for n in range(5):
        await wait_for_phases(watcher, scans, at_least=4000 * (n + 1))
        await asyncio.to_thread(pooler.restart, kill=how == "kill")
    await watcher.wait_for(scans + noops, "completed", timeout=120)
    totals: Counter[str] = Counter()
    for worker in workers:
        totals += await check_worker_lines(worker)
    ended = Counter(job for job, status in watcher.events if status == "completed")
    assert all(ended[j] == 1 for j in scans + noops), ended
    for job_id in scans:
        assert (
            await direct.fetchval("SELECT count(*) FROM sitemap_urls WHERE job_id = $1", job_id)
            == CHILDREN * URLS_PER_CHILD
        )
    print(f"\n[restart x5 {how}] {dict(totals)}")


async def check_worker_lines(worker: WorkerProcess) -> Counter[str]:
    """Per worker of several: alive, no traceback, retries with a connection error."""
    assert worker.proc.returncode is None
    assert not [line for line in worker.lines if "Traceback" in line], worker.log()
    retries = [
        line for line in worker.lines if re.search(r"failed \(attempt \d+/\d+\), retry in", line)
    ]
    for line in retries:
        assert CONNECTION_ERROR.search(line.split(": ", 1)[-1]), line
    return Counter({"retried": len(retries)})


@pytest.mark.slow
async def test_admin_console_kill_then_resume(
    spawn: Spawn,
    pooler: AdminPgBouncer,
    site: Site,
    database: str,
    direct: asyncpg.Connection,
    watcher: StatusWatcher,
) -> None:
    """`KILL db` drops every client and server connection of the database at once, and new
    clients wait until `RESUME db`: a pooler that accepts but does not answer for 2 s."""
    worker = await spawn("run")
    scans = await insert_jobs(direct, site, scans=4, noops=2)
    await wait_for_phases(watcher, scans[:4], at_least=2000)
    await pooler.admin(f"KILL {database}")
    # The pause being tested: the worker's reconnects queue in the pooler meanwhile, and
    # nothing it can observe ends the pause but RESUME.
    await asyncio.sleep(2)
    await pooler.admin(f"RESUME {database}")
    counts = await check_every_job_ended_once(worker, watcher, scans, scans[:4])
    print(f"\n[admin KILL] {dict(counts)}")


@pytest.mark.slow
async def test_admin_console_reconnect_is_invisible(
    spawn: Spawn,
    pooler: AdminPgBouncer,
    site: Site,
    database: str,
    direct: asyncpg.Connection,
    watcher: StatusWatcher,
) -> None:
    """One `RECONNECT db` mid-scan swaps the server connections once they are released: in
    transaction mode that is between two of the worker's transactions, so no job notices."""
    worker = await spawn("run")
    scans = await insert_jobs(direct, site, scans=4, noops=2)
    await wait_for_phases(watcher, scans[:4], at_least=4000)
    await pooler.admin(f"RECONNECT {database}")
    counts = await check_every_job_ended_once(worker, watcher, scans, scans[:4])
    assert counts["retried"] == 0 and counts["attempts_over_1"] == 0, counts


@pytest.mark.slow
async def test_admin_console_reconnect_burst(
    spawn: Spawn,
    pooler: AdminPgBouncer,
    site: Site,
    database: str,
    direct: asyncpg.Connection,
    watcher: StatusWatcher,
) -> None:
    """Three RECONNECTs within a few milliseconds: PgBouncer 1.18 closes server connections
    still logging in ("connect string changed"), counts that as a failed login, and refuses
    every client for server_login_retry (15 s). The worker sees a 15 s pooler outage: jobs
    are retried with the pooler's message, and all complete once."""
    worker = await spawn("run")
    scans = await insert_jobs(direct, site, scans=4, noops=2)
    await wait_for_phases(watcher, scans[:4], at_least=2000)
    for _ in range(3):
        await pooler.admin(f"RECONNECT {database}")
    counts = await check_every_job_ended_once(worker, watcher, scans, scans[:4], timeout=90)
    print(f"\n[RECONNECT burst] {dict(counts)}")
