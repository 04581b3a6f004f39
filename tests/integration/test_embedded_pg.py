"""Real PostgreSQL (and PgBouncer) through worker.embedded_pg: no mocks, a few seconds in all."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import asyncpg
import psycopg
import pytest

from tests.support.fast_pg import FastPostgres
from tests.support.pgbouncer import PgBouncer, find_pgbouncer
from worker.database_urls import open_database
from worker.embedded_pg import EmbeddedPostgres
from worker.settings import Settings


@pytest.fixture(scope="module")
def base() -> Iterator[Path]:
    """mkdtemp is 0700, which the unprivileged server account could not traverse as root."""
    d = Path(tempfile.mkdtemp(prefix="swpg-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def server(base: Path) -> Iterator[EmbeddedPostgres]:
    srv = FastPostgres(base / "tcp", tcp=True)
    srv.start()
    yield srv
    srv.stop()


def _postmaster_pid(srv: EmbeddedPostgres) -> int:
    return int((srv.data_dir / "postmaster.pid").read_text().splitlines()[0])


def _postmasters(data_dir: Path) -> int:
    """Processes whose command line is `postgres ... -D <data_dir>`: backends rename themselves."""
    count = 0
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except (FileNotFoundError, PermissionError, NotADirectoryError, ProcessLookupError):
            continue
        if argv and argv[0].endswith(b"postgres") and str(data_dir).encode() in argv:
            count += 1
    return count


async def _fetchval(dsn: str, query: str) -> object:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(query)
    finally:
        await conn.close()


async def test_tcp_server_answers(server: EmbeddedPostgres) -> None:
    assert server.dsn == f"postgresql://postgres@127.0.0.1:{server.port}/postgres"
    assert server.socket_dir == server.data_dir  # short path: socket lives in the data dir
    assert await _fetchval(server.dsn, "select 1") == 1


async def test_test_server_trades_durability_for_speed(server: EmbeddedPostgres) -> None:
    for name in ("fsync", "synchronous_commit", "full_page_writes"):
        assert await _fetchval(server.dsn, f"show {name}") == "off", name
    assert await _fetchval(server.dsn, "show max_connections") == "200"


async def test_start_reuses_running_server(server: EmbeddedPostgres) -> None:
    pid = _postmaster_pid(server)
    again = FastPostgres(server.data_dir, tcp=True)  # picks its own port at first
    assert again.start() == server.dsn
    assert again.port == server.port
    assert _postmaster_pid(server) == pid
    assert _postmasters(server.data_dir) == 1
    assert await _fetchval(again.dsn, "select 1") == 1


def test_concurrent_starts_share_one_postmaster(base: Path) -> None:
    a = FastPostgres(base / "race", tcp=True)
    b = FastPostgres(base / "race", tcp=True)
    try:
        with ThreadPoolExecutor(2) as pool:
            dsns = list(pool.map(lambda s: s.start(), (a, b)))
        assert dsns[0] == dsns[1]
        assert _postmasters(a.data_dir) == 1
    finally:
        a.stop()
    assert not b.is_running()


async def test_stop_start_keeps_data(server: EmbeddedPostgres) -> None:
    conn = await asyncpg.connect(server.dsn)
    try:
        await conn.execute("create table kept (v int); insert into kept values (42)")
    finally:
        await conn.close()
    server.stop()
    assert not server.is_running()
    server.stop()  # no-op when stopped
    server.start()
    assert await _fetchval(server.dsn, "select v from kept") == 42


async def test_start_after_kill9_recovers(server: EmbeddedPostgres) -> None:
    """A stale postmaster.pid (and a lingering zombie) must not block the next start."""
    os.kill(_postmaster_pid(server), signal.SIGKILL)
    deadline = time.monotonic() + 5
    while server.is_running() and time.monotonic() < deadline:
        pass  # each is_running() runs pg_ctl status, so this is no hot spin
    assert not server.is_running()
    server.start()
    assert await _fetchval(server.dsn, "select count(*) from pg_stat_activity") >= 1
    assert _postmasters(server.data_dir) == 1


async def test_socket_only_with_asyncpg_and_psycopg(base: Path) -> None:
    """A data dir path too long for a unix socket puts the socket in a short /tmp dir."""
    srv = FastPostgres(base / ("long" * 25) / "data")
    try:
        dsn = srv.start()
        assert srv.socket_dir != srv.data_dir
        assert (srv.socket_dir / f".s.PGSQL.{srv.port}").is_socket()
        assert dsn == f"postgresql://postgres@/postgres?host={srv.socket_dir}&port={srv.port}"
        assert await _fetchval(dsn, "show listen_addresses") == ""
        async with await psycopg.AsyncConnection.connect(dsn) as conn:
            cur = await conn.execute("select 1")
            assert await cur.fetchone() == (1,)
    finally:
        srv.stop()
        shutil.rmtree(srv.socket_dir, ignore_errors=True)


async def test_transactions_through_pgbouncer(server: EmbeddedPostgres, base: Path) -> None:
    """Pool of 2 server connections for 4 clients, so server connections really get reassigned."""
    if find_pgbouncer() is None:
        if os.environ.get("CI"):
            pytest.fail("pgbouncer is required in CI")
        pytest.skip("pgbouncer not installed")
    bouncer = PgBouncer(base / "bouncer", server.port, pool_size=2)
    bouncer.start()
    try:
        direct = await asyncpg.connect(server.dsn)
        try:
            await direct.execute(
                "create table bounced (id serial primary key, worker int, n int, done bool)"
            )
            clients = [
                await asyncpg.connect(bouncer.dsn("postgres"), statement_cache_size=0)
                for _ in range(4)
            ]
            try:
                await asyncio.gather(*(_fifty_transactions(c, w) for w, c in enumerate(clients)))
            finally:
                await asyncio.gather(*(c.close() for c in clients))
            assert await direct.fetchval("select count(*) from bounced where done") == 200
        finally:
            await direct.close()
    finally:
        bouncer.stop()


async def _fifty_transactions(conn: asyncpg.Connection, worker: int) -> None:
    for n in range(50):
        async with conn.transaction():
            row_id = await conn.fetchval(
                "insert into bounced (worker, n, done) values ($1, $2, false) returning id",
                worker,
                n,
            )
            await conn.execute("update bounced set done = true where id = $1", row_id)


# -- the last one out stops it: open_database, as every command uses it ----------------


def embedded_settings(data_dir: Path) -> Settings:
    return Settings(database_url=None, listen_database_url=None, embedded_pg_dir=str(data_dir))


async def test_a_command_that_started_the_server_later_keeps_it_when_the_first_leaves(
    base: Path,
) -> None:
    """B adopts the server A started, and has not connected yet when A leaves: A must not
    stop it under B. The last one out (B) does stop it."""
    settings = embedded_settings(base / "shared")
    async with open_database(settings, announce=False) as a_urls:
        assert await _fetchval(a_urls.work, "select 1") == 1
        # the product's server is durable; only the tests' FastPostgres turns fsync off
        assert await _fetchval(a_urls.work, "show fsync") == "on"
        assert await _fetchval(a_urls.work, "show synchronous_commit") == "on"
        assert await _fetchval(a_urls.work, "show max_connections") == "200"
        b = open_database(settings, announce=False)
        b_urls = await b.__aenter__()
    server = EmbeddedPostgres(base / "shared")
    try:
        assert server.is_running()
        assert await _fetchval(b_urls.work, "select 1") == 1
    finally:
        await b.__aexit__(None, None, None)
    assert not server.is_running()


def _flock_waiters(path: Path) -> int:
    """Processes blocked in flock() on `path`, as /proc/locks lists them ("->" lines)."""
    inode = f":{path.stat().st_ino} "
    return sum(
        1
        for line in Path("/proc/locks").read_text().splitlines()
        if "->" in line and "FLOCK" in line and inode in line
    )


async def test_the_last_one_out_waits_for_the_start_lock(base: Path) -> None:
    """A start holds the lock from its check to its adoption: a stop decided meanwhile
    would leave it a server about to go. The check-and-stop takes the same lock."""
    settings = embedded_settings(base / "locked")
    server = EmbeddedPostgres(base / "locked")
    lock_file = base / "locked.lock"
    opened = open_database(settings, announce=False)
    await opened.__aenter__()
    with server._lock():  # a start in progress elsewhere
        leaving = asyncio.create_task(opened.__aexit__(None, None, None))
        async with asyncio.timeout(30):  # until it waits for the lock, or has stopped the server
            while not leaving.done() and not _flock_waiters(lock_file):
                await asyncio.sleep(0.01)
        assert not leaving.done() and server.is_running(), "stopped while a start held the lock"
    await asyncio.wait_for(leaving, 60)
    assert not server.is_running()
