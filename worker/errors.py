"""The few exceptions the engine tells apart, and the retry delay as a pure function."""

from __future__ import annotations

import asyncpg

# Defined beside the scanner, which must not import asyncpg; re-exported for the worker.
from .scan.clean import retry_delay as retry_delay
from .scan.clean import storable as storable

# Errors that say the connection or server is gone, not that a statement was wrong: the
# work is tried again once the database answers.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
    # The driver's own state machine gave up: seen when a server (or pooler) connection is
    # killed between two messages of one operation, and the unsolicited FATAL arrives
    # mid-exchange. The connection is unusable; a fresh one works.
    asyncpg.InternalClientError,
)


class WorkerError(Exception):
    """Base of the worker's own errors."""


class PermanentJobError(WorkerError):
    """Retrying cannot help (bad payload, unknown job type): the job fails at once."""


class RetryableJobError(WorkerError):
    """A transient failure; `delay` (seconds) overrides the backoff when the cause knows
    better (e.g. a Retry-After header)."""

    def __init__(self, message: str, delay: float | None = None) -> None:
        super().__init__(message)
        self.delay = delay


class JobLost(WorkerError):
    """A guarded update touched no row: the job was cancelled or its lease was taken over.
    Work stops and nothing more is written for it."""


class ShuttingDown(WorkerError):
    """The worker is stopping: the job is handed back to pending between phases."""


# SQLSTATE classes that retrying will not fix: data exceptions, integrity violations,
# syntax or access errors. Everything else from the database is treated as transient.
_PERMANENT_SQLSTATE_CLASSES = ("22", "23", "42", "2B", "44")


def is_permanent(exc: BaseException) -> bool:
    """Whether a job that raised `exc` should fail now rather than be retried."""
    if isinstance(exc, PermanentJobError):
        return True
    if isinstance(exc, CONNECTION_ERRORS):
        return False
    if isinstance(exc, asyncpg.PostgresError):
        state = getattr(exc, "sqlstate", None) or ""
        return state[:2] in _PERMANENT_SQLSTATE_CLASSES
    return False


def describe(exc: BaseException) -> str:
    """A one-line message for `jobs.error` that a person can act on (PostgreSQL text cannot
    hold a NUL, so one in a message is spelled out; see storable() for the rest)."""
    return storable(_describe(exc).replace("\x00", "\\0"))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, asyncpg.PostgresError):
        state = getattr(exc, "sqlstate", None)
        detail = getattr(exc, "detail", None)
        text = f"database error {state}: {exc}"
        return f"{text} ({detail})" if detail else text
    text = str(exc).strip()
    name = type(exc).__name__
    if isinstance(exc, WorkerError):
        return text or name
    if isinstance(exc, asyncpg.InternalClientError):  # see CONNECTION_ERRORS
        return f"database connection broke in the middle of a statement ({name}: {text})"
    return f"{name}: {text}" if text else name
