"""The event loop's handler for errors nobody awaited, less one known piece of driver noise.

asyncpg (seen on 0.32.0) can leave a future behind when an operation cannot start on a
connection whose server side has just died: `Protocol.copy_in` creates its waiter, then the
state check refuses the COPY (an unsolicited error from the pooler arrived between two
operations), and the waiter stays pending. When the connection closes, that waiter gets the
connection error, nobody ever awaits it, and asyncio logs "Future exception was never
retrieved" at ERROR with a traceback. The operation has already failed with an error of its
own, which the caller handles (the job's phase is retried), so the line reads like a crash
where there was none. That case alone, a bare future (not a task) holding a connection
error, goes to DEBUG; everything else keeps asyncio's default handling. (The match reads
asyncio's wording, "never retrieved": should that change, the line is logged as before,
so nothing is ever hidden by it.)
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from .errors import CONNECTION_ERRORS, describe

log = logging.getLogger(__name__)


def install(loop: asyncio.AbstractEventLoop) -> None:
    loop.set_exception_handler(_handle)


def _handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    if is_lost_connection_noise(context):
        log.debug(
            "a lost connection's error that the driver left unawaited: %s",
            describe(context["exception"]),
        )
        return
    loop.default_exception_handler(context)


def is_lost_connection_noise(context: dict[str, Any]) -> bool:
    future = context.get("future")
    return (
        isinstance(future, asyncio.Future)
        and not isinstance(future, asyncio.Task)  # our own tasks' errors stay loud
        and isinstance(context.get("exception"), CONNECTION_ERRORS)
        and "never retrieved" in str(context.get("message", ""))
    )
