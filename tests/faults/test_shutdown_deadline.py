"""SIGTERM while the database cannot answer the shutdown's last steps: the worker process
still exits, with status 0, within WORKER_SHUTDOWN_GRACE.

- Its outcome writes are blocked (a statement trigger waits for a lock the test holds):
  the engine stops waiting for them when the grace runs out; the jobs' leases expire and
  another worker runs them again.
- Its LISTEN connection is reconnecting through a path that swallows everything: the
  connect, which may take 10 s to time out, is cut short by the stop.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Awaitable, Callable

import asyncpg
import pytest

from tests.acceptance.conftest import FAST
from tests.support.locks import until_a_statement_waits_on_a_lock
from tests.support.processes import WorkerProcess
from tests.support.status_gate import gate_closed, install_gate
from tests.support.tcpproxy import TcpProxy
from tests.support.waits import StatusWatcher

Spawn = Callable[..., Awaitable[WorkerProcess]]
GRACE = float(FAST["WORKER_SHUTDOWN_GRACE"])


async def sigterm_and_time_the_exit(worker: WorkerProcess) -> float:
    began = time.monotonic()
    worker.signal(signal.SIGTERM)
    code = await worker.wait(timeout=GRACE + 20)
    took = time.monotonic() - began
    print(f"\nexit {code} {took:.2f} s after SIGTERM (grace {GRACE:g} s)")
    assert code == 0, worker.log()
    return took


async def test_exit_within_the_grace_while_outcome_writes_are_blocked(
    spawn: Spawn, direct: asyncpg.Connection, direct_dsn: str, watcher: StatusWatcher
) -> None:
    await install_gate(direct)
    quick, held = [
        await direct.fetchval(
            "INSERT INTO jobs (job_type, payload) VALUES ('noop', $1::jsonb) RETURNING id",
            json.dumps({"seconds": s}),
        )
        for s in (0, 60)
    ]
    async with gate_closed(direct_dsn):
        worker = await spawn("run")
        await watcher.wait_for(held, "processing")
        await until_a_statement_waits_on_a_lock(direct, "%sitemap_worker_complete%")
        took = await sigterm_and_time_the_exit(worker)
        assert took <= GRACE, f"exit took {took:.2f} s with a {GRACE:g} s grace"
        assert any("job outcome(s) not written" in line for line in worker.lines), worker.log()
    # Nothing was lost: once the leases run out, another worker completes both (the
    # test shortens the long one's hold so that the re-run takes no minute).
    await direct.execute("UPDATE jobs SET payload = '{\"seconds\": 0.1}' WHERE id = $1", held)
    await spawn("run")
    rows = await watcher.wait_for([quick, held], "completed", timeout=30)
    assert [r["attempts"] for r in rows] == [2, 2]


@pytest.fixture
def worker_env(proxy: TcpProxy, database: str, direct_dsn: str) -> dict[str, str]:
    """LISTEN through the proxy, job work direct; a silent listener is noticed in ~1 s."""
    return {
        **FAST,
        "DATABASE_URL": direct_dsn,
        "LISTEN_DATABASE_URL": proxy.dsn(database),
        "WORKER_LISTENER_PROBE_INTERVAL": "0.5",
        "WORKER_LISTENER_PROBE_TIMEOUT": "0.5",
        "WORKER_LISTENER_MAX_BACKOFF": "0.2",
    }


async def test_exit_within_the_grace_while_the_listener_is_connecting(
    spawn: Spawn, proxy: TcpProxy
) -> None:
    """The path to the LISTEN server starts swallowing everything: the probe notices, and
    the listener's reconnect waits (its timeout is 10 s) when SIGTERM arrives."""
    worker = await spawn("run")
    accepted = proxy.accepted
    proxy.blackhole()
    await worker.wait_for_line("listener lost", timeout=10)
    # Two connections reach the proxy after the hole opens: the driver's cancel request
    # for the unanswered probe, then the reconnect.
    async with asyncio.timeout(15):
        while proxy.accepted < accepted + 2:
            await asyncio.sleep(0.02)
    took = await sigterm_and_time_the_exit(worker)
    assert took <= GRACE, f"exit took {took:.2f} s with a {GRACE:g} s grace"
