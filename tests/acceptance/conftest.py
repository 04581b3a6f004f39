"""Acceptance tests drive the real `sitemap-worker` process against a fresh database."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from tests.support.processes import WorkerProcess
from tests.support.waits import StatusWatcher

FAST = {
    "WORKER_POLL_INTERVAL": "0.5",
    "WORKER_HEARTBEAT_INTERVAL": "0.3",
    "WORKER_LEASE": "3",
    "WORKER_SHUTDOWN_GRACE": "3",
    "WORKER_RETRY_BASE": "0.05",
}


@pytest.fixture
def worker_env(direct_dsn: str) -> dict[str, str]:
    return {"DATABASE_URL": direct_dsn, "LISTEN_DATABASE_URL": direct_dsn, **FAST}


@pytest.fixture
async def spawn(
    worker_env: dict[str, str],
) -> AsyncIterator[Callable[..., Awaitable[WorkerProcess]]]:
    """Start workers (`run` unless told otherwise); all are stopped at the end."""
    started: list[WorkerProcess] = []

    async def start(*args: str, ready: bool = True, **env: str) -> WorkerProcess:
        proc = await WorkerProcess.start({**worker_env, **env}, *args)
        started.append(proc)
        if ready and (not args or args[0] == "run") and "--burst" not in args:
            await proc.wait_ready()
        return proc

    yield start
    for proc in started:
        await proc.stop()


@pytest.fixture
async def watcher(direct_dsn: str) -> AsyncIterator[StatusWatcher]:
    w = await StatusWatcher.open(direct_dsn)
    yield w
    await w.close()
