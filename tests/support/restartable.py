"""Servers a fault test may stop and start: a PostgreSQL cluster of its own (the session
`pg_server` is shared by every other test and must never go down) and a PgBouncer whose
admin console answers, plus the measurements the fault tests make on a worker process.

Why not the session servers: a restart breaks every connection to them, including other
tests' fixtures. Each fault module starts its own cluster on a fixed port, so a restart
comes back where the worker's DATABASE_URL points.
"""

from __future__ import annotations

import os
import re
import socket
import time
from pathlib import Path
from typing import Literal

import psycopg

from tests.support.fast_pg import FastPostgres
from tests.support.pgbouncer import PgBouncer
from tests.support.processes import WorkerProcess, psql
from tests.support.waits import StatusWatcher
from worker.embedded_pg import EmbeddedPostgres, free_tcp_port

TEMPLATE = "sw_fault_template"
ShutdownMode = Literal["smart", "fast", "immediate"]


class RestartablePostgres(FastPostgres):
    """A TCP cluster on a fixed 127.0.0.1 port that can be stopped in any pg_ctl mode and
    started again on the same port.

    fsync stays off (a stopped server is not a crashed machine: what reached the kernel
    survives), but synchronous_commit is left on, as in production: with it off, an
    immediate shutdown would also lose the worker's *durable* outcome writes, which no
    real deployment does."""

    SERVER_SETTINGS = (*EmbeddedPostgres.SERVER_SETTINGS, "fsync=off", "full_page_writes=off")

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        super().__init__(data_dir, tcp=True, port=port or free_tcp_port())

    def dsn_for(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def stop_mode(self, mode: ShutdownMode) -> None:
        """`pg_ctl stop -m <mode>` and wait until the postmaster is gone. `immediate` is a
        crash as far as clients can tell: no shutdown checkpoint, crash recovery on start."""
        r = self._run("pg_ctl", "-D", str(self.data_dir), "-w", "-t", "60", "-m", mode, "stop")
        if r.returncode != 0 and self.is_running():
            raise self._error(f"pg_ctl stop -m {mode}", r)

    def ensure_running(self) -> None:
        if not self.is_running():
            self.start()

    def create_database(self, name: str, template: str = TEMPLATE) -> None:
        with psycopg.connect(self.dsn_for(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name} TEMPLATE {template}")

    def drop_database(self, name: str) -> None:
        with psycopg.connect(self.dsn_for(), autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


class AdminPgBouncer(PgBouncer):
    """The shared helper's PgBouncer plus an admin console for `postgres` (KILL, RECONNECT,
    SHOW POOLS through the real psql), and kill/restart on the same port."""

    def _write_config(self, uid: int | None, gid: int | None) -> Path:
        ini = super()._write_config(uid, gid)
        ini.write_text(ini.read_text() + "admin_users = postgres\n")
        return ini

    async def admin(self, command: str) -> str:
        """One admin console command (simple query protocol, which psql speaks)."""
        return await psql(self.dsn("pgbouncer"), command)


# -- measuring a worker process ---------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process from /proc/PID/stat (fields 14 and 15, clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # after the ")" the first field is field 3 (state); utime is field 14, stime field 15
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Window:
    """What a worker did between two instants: log lines written and CPU time used."""

    def __init__(self, worker: WorkerProcess) -> None:
        self.worker = worker
        self.first_line = len(worker.lines)
        self.cpu_at_start = cpu_seconds(worker.proc.pid)
        self.started = time.monotonic()
        self.started_wall = time.time()  # log lines carry wall-clock stamps
        self.lines: list[str] = []
        self.cpu = 0.0
        self.seconds = 0.0

    def close(self) -> Window:
        self.lines = self.worker.lines[self.first_line :]
        self.cpu = cpu_seconds(self.worker.proc.pid) - self.cpu_at_start
        self.seconds = time.monotonic() - self.started
        return self


def wait_for_port(port: int, timeout: float = 20.0) -> None:
    """A bounded poll: a listening socket has no event to await."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


async def reopen_watcher(old: StatusWatcher | None, dsn: str) -> StatusWatcher:
    """A StatusWatcher's connection dies with the server; a fresh one re-reads rows on
    every wait, so nothing that changed meanwhile is missed."""
    if old is not None:
        old.conn.terminate()
    return await StatusWatcher.open(dsn)


class AtLeast:
    """A `WorkerProcess.wait_for_line` matcher for the n-th occurrence of a line: true once
    `n` of the worker's lines match `pattern`. (wait_for_line alone returns the first match,
    already seen or not, so a second restart's "reconnected" needs this.)"""

    def __init__(self, worker: WorkerProcess, pattern: str, n: int) -> None:
        self.worker, self.regex, self.n = worker, re.compile(pattern), n
        self.pattern = f"{pattern!r} x{n}"

    def count(self) -> int:
        return sum(1 for line in self.worker.lines if self.regex.search(line))

    def search(self, _line: str) -> bool:
        return self.count() >= self.n
