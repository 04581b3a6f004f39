"""The CLI's error boundary and scan's wait: known failures become one line, and scan never
waits on jobs that its own (dead) worker will not run."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from worker.cli import _until_either_ends
from worker.cli_errors import KNOWN_ERRORS, CliError, one_line
from worker.embedded_pg import EmbeddedPostgresError


@pytest.mark.parametrize(
    "exc, code, words",
    [
        (CliError("DATABASE_URL is not a PostgreSQL URL"), 1, "DATABASE_URL is not"),
        (CliError("bad", code=2), 2, "bad"),
        (
            asyncpg.UndefinedTableError('relation "jobs" does not exist'),
            1,
            "sitemap-worker migrate",
        ),
        (
            asyncpg.UndefinedFunctionError("function sitemap_worker_prune does not exist"),
            1,
            "sitemap-worker migrate",
        ),
        (ConnectionResetError(104, "Connection reset by peer"), 1, "lost the database connection"),
        (asyncpg.InterfaceError("connection is closed"), 1, "lost the database connection"),
        (PermissionError(13, "Permission denied"), 1, "PermissionError"),
        (
            EmbeddedPostgresError("initdb failed:\nline two"),
            1,
            "embedded PostgreSQL: initdb failed: line two",
        ),
    ],
)
def test_known_errors_become_one_line(exc, code, words):
    assert isinstance(exc, KNOWN_ERRORS)
    got_code, line = one_line(exc)
    assert got_code == code and words in line and "\n" not in line


def test_a_bug_is_not_a_known_error():
    assert not isinstance(RuntimeError("bug"), KNOWN_ERRORS)
    assert not isinstance(KeyError("x"), KNOWN_ERRORS)


async def _forever() -> None:
    await asyncio.Event().wait()


async def _stops_on(stop: asyncio.Event) -> str:
    await stop.wait()
    return "stopped"


async def test_a_dying_worker_ends_the_wait_with_its_error():
    async def crash() -> None:
        await asyncio.sleep(0)
        raise RuntimeError("worker bug")

    waiter = asyncio.create_task(_forever())
    with pytest.raises(RuntimeError, match="worker bug"):
        await asyncio.wait_for(
            _until_either_ends(waiter, asyncio.create_task(crash()), asyncio.Event()), 5
        )
    assert waiter.cancelled()


async def test_a_worker_that_stops_early_is_said_in_one_line():
    async def quit_early() -> None:
        await asyncio.sleep(0)

    waiter = asyncio.create_task(_forever())
    with pytest.raises(CliError, match="stopped before the jobs ended"):
        await asyncio.wait_for(
            _until_either_ends(waiter, asyncio.create_task(quit_early()), asyncio.Event()), 5
        )


async def test_jobs_ending_stop_the_worker_and_wait_for_it():
    stop = asyncio.Event()
    worker = asyncio.create_task(_stops_on(stop))

    async def jobs_end() -> list[int]:
        await asyncio.sleep(0)
        return [1]

    await asyncio.wait_for(_until_either_ends(asyncio.create_task(jobs_end()), worker, stop), 5)
    assert stop.is_set() and worker.result() == "stopped"


async def test_a_failing_wait_still_stops_the_worker_then_raises():
    stop = asyncio.Event()
    worker = asyncio.create_task(_stops_on(stop))

    async def lose_connection() -> None:
        await asyncio.sleep(0)
        raise ConnectionResetError("gone")

    with pytest.raises(ConnectionResetError):
        await asyncio.wait_for(
            _until_either_ends(asyncio.create_task(lose_connection()), worker, stop), 5
        )
    assert worker.result() == "stopped"
