"""The command line's one error boundary: known failures become one line and an exit status.

Known means: a mistake the user can fix (CliError), the database's own answer, a lost or
refused connection, the embedded server failing to start. Anything else is a bug and keeps
its traceback."""

from __future__ import annotations

import logging

import asyncpg

from .embedded_pg import EmbeddedPostgresError
from .errors import CONNECTION_ERRORS, describe

log = logging.getLogger(__name__)

MIGRATE_HINT = "run `sitemap-worker migrate` first"


class CliError(Exception):
    """What went wrong, in one line a user can act on; `code` is the exit status."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


KNOWN_ERRORS: tuple[type[BaseException], ...] = (
    CliError,
    EmbeddedPostgresError,
    asyncpg.PostgresError,
    *CONNECTION_ERRORS,
)


def one_line(exc: BaseException) -> tuple[int, str]:
    """(exit status, message) for an exception in KNOWN_ERRORS."""
    if isinstance(exc, CliError):
        return exc.code, str(exc)
    if isinstance(exc, EmbeddedPostgresError):
        return 1, f"embedded PostgreSQL: {_flat(str(exc))}"
    if isinstance(exc, asyncpg.UndefinedTableError | asyncpg.UndefinedFunctionError):
        return 1, f"the database lacks the sitemap-worker schema ({exc}): {MIGRATE_HINT}"
    if isinstance(exc, OSError) and not isinstance(exc, ConnectionError | TimeoutError):
        return 1, _flat(describe(exc))  # a file or permission problem, not the connection
    if isinstance(exc, CONNECTION_ERRORS):
        return 1, f"lost the database connection: {_flat(describe(exc))}"
    return 1, _flat(describe(exc))


def _flat(text: str) -> str:
    return " ".join(text.split())
