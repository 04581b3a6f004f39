"""The loop's handler quiets only the driver's unawaited lost-connection futures."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Callable

import asyncpg
import pytest

from worker import loop_errors


def loop_factories() -> list[Callable[[], asyncio.AbstractEventLoop] | None]:
    """asyncio's own loop, and uvloop's, which `sitemap-worker` runs on when installed."""
    try:
        import uvloop
    except ImportError:
        return [None]
    return [None, uvloop.new_event_loop]


@pytest.fixture(params=loop_factories(), ids=lambda f: "asyncio" if f is None else "uvloop")
def loop_factory(request):
    return request.param


def unretrieved(
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None,
    make: type[asyncio.Future[None]] | None,
    exc: BaseException,
) -> list[str]:
    """Messages asyncio logs at ERROR when a future (or task) holding `exc` is collected
    without anyone retrieving it, under the worker's handler."""
    logged: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.ERROR:
                logged.append(record.getMessage())

    handler = Collect()
    logging.getLogger("asyncio").addHandler(handler)
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            loop_errors.install(runner.get_loop())

            async def leave_one_behind() -> None:
                if make is None:

                    async def fail() -> None:
                        raise exc

                    task = asyncio.ensure_future(fail())
                    await asyncio.wait([task])
                else:
                    future = asyncio.get_running_loop().create_future()
                    future.set_exception(exc)

            runner.run(leave_one_behind())
            gc.collect()
    finally:
        logging.getLogger("asyncio").removeHandler(handler)
    return logged


@pytest.mark.parametrize(
    "exc",
    [
        asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        ConnectionResetError("reset by peer"),
    ],
)
def test_a_bare_future_holding_a_lost_connection_is_not_logged_as_an_error(loop_factory, exc):
    assert unretrieved(loop_factory, asyncio.Future, exc) == []


def test_a_bare_future_holding_any_other_error_is_still_logged(loop_factory):
    logged = unretrieved(loop_factory, asyncio.Future, ValueError("a bug"))
    assert len(logged) == 1
    assert "never retrieved" in logged[0]


def test_a_task_holding_a_lost_connection_is_still_logged(loop_factory):
    """Our own tasks' errors stay loud: a task nobody awaited is a bug of ours."""
    logged = unretrieved(loop_factory, None, asyncpg.ConnectionDoesNotExistError("gone"))
    assert len(logged) == 1
    assert "Task exception was never retrieved" in logged[0]
