"""Pooled, prepare-free connections and the explicit short transaction every statement runs in.

Everything here must work unchanged through PgBouncer/Supavisor in transaction mode: no
statement cache, no prepare(), no cursors, no session state, nothing sent on release.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import asyncpg

from .settings import Settings

log = logging.getLogger(__name__)

APPLICATION_NAME = "sitemap-worker"

T = TypeVar("T")


async def _reset_only_open_transaction(conn: asyncpg.Connection) -> None:
    """Replaces asyncpg's release-time reset query (UNLISTEN *, RESET ALL, ...): we keep no
    session state, so only an open transaction needs ending, and an idle release costs no
    round trip."""
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


def connect_kwargs(settings: Settings) -> dict[str, Any]:
    """Options shared by the pool and one-off connections."""
    return {
        "statement_cache_size": 0,
        "max_cached_statement_lifetime": 0,
        "server_settings": {"application_name": APPLICATION_NAME},
        # A client-side cap a little above the server's statement_timeout catches
        # half-open pooled sockets that the server can no longer answer on.
        "command_timeout": settings.statement_timeout.total_seconds() + 5,
    }


async def create_pool(dsn: str, settings: Settings, *, size: int | None = None) -> asyncpg.Pool:
    """min_size=0: asyncpg logs a traceback per failed refill while the database is down,
    so the pool opens connections only when asked and the engine handles outages itself."""
    return await asyncpg.create_pool(
        dsn,
        min_size=0,
        max_size=size or settings.effective_pool_size,
        max_inactive_connection_lifetime=120,
        reset=_reset_only_open_transaction,
        **connect_kwargs(settings),
    )


async def connect(dsn: str, settings: Settings, **extra: Any) -> asyncpg.Connection:
    return await asyncpg.connect(dsn, **{**connect_kwargs(settings), **extra})


def _begin_sql(settings: Settings, durable: bool, timeout: float | None = None) -> str:
    seconds = settings.statement_timeout.total_seconds() if timeout is None else timeout
    ms = max(int(seconds * 1000), 1)
    # One round trip opens the transaction and bounds it; SET LOCAL dies with it, so
    # nothing leaks to the next client of a pooled server connection.
    sql = f"BEGIN; SET LOCAL statement_timeout = {ms}"
    return sql if durable else sql + "; SET LOCAL synchronous_commit = off"


@asynccontextmanager
async def transaction(
    conn: asyncpg.Connection,
    settings: Settings,
    *,
    durable: bool = True,
    timeout: float | None = None,
) -> AsyncIterator[asyncpg.Connection]:
    """An explicit short transaction: commit on success, roll back on any error or
    cancellation (a connection that cannot even roll back is closed, never reused).

    `durable=False` commits without waiting for the WAL flush: only for writes whose loss
    in a server crash is harmless (a claim or a lease renewal: the job is simply runnable
    again). Any later durable commit flushes them anyway, since WAL is written in order."""
    await conn.execute(_begin_sql(settings, durable, timeout))
    try:
        yield conn
    except BaseException:
        await _roll_back_or_close(conn)
        raise
    await conn.execute("COMMIT")


async def _roll_back_or_close(conn: asyncpg.Connection) -> None:
    """After an error inside a transaction. Never raises: the caller re-raises the error
    that got here, which is the one worth reporting. A connection that died has already
    been detached from its pool proxy by asyncpg (any call on the proxy then raises
    InterfaceError), so that case only needs the error to pass."""
    try:
        if not conn.is_closed():
            await conn.execute("ROLLBACK")
            return
    except BaseException:
        pass
    try:
        conn.terminate()
    except asyncpg.InterfaceError:
        pass


@asynccontextmanager
async def pooled_transaction(
    pool: asyncpg.Pool, settings: Settings, *, durable: bool = True, timeout: float | None = None
) -> AsyncIterator[asyncpg.Connection]:
    """A pooled connection for exactly one transaction, released right after it.
    `timeout` (seconds) overrides settings.statement_timeout for its statements."""
    async with (
        pool.acquire() as conn,
        transaction(conn, settings, durable=durable, timeout=timeout),
    ):
        yield conn


class Alone:
    """Runs one statement on a pooled connection as its own implicit transaction: two round
    trips (asyncpg's unnamed Parse+Describe+Flush, then Bind+Execute+Sync, which commits),
    where BEGIN; SET LOCAL ...; the statement; COMMIT take four. Only for a phase that is a
    single statement (claim, heartbeat, final write). The time limit is the client's: past
    `timeout` seconds asyncpg sends a cancel request (PgBouncer forwards it) and raises
    TimeoutError; operators who want a server-side cap as well can set one on the role
    (`ALTER ROLE ... SET statement_timeout`). A transaction pooler keeps the server
    connection between the two round trips: Flush, unlike Sync, does not end the implicit
    transaction.

        rows = await connections.Alone(pool, timeout=5).fetch(sql, arg, ...)
    """

    __slots__ = ("_pool", "_timeout")

    def __init__(self, pool: asyncpg.Pool, *, timeout: float) -> None:
        self._pool = pool
        self._timeout = timeout

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        async with self._pool.acquire() as conn:
            return list(await conn.fetch(sql, *args, timeout=self._timeout))

    async def fetchval(self, sql: str, *args: Any) -> Any:
        async with self._pool.acquire() as conn:
            return await conn.fetchval(sql, *args, timeout=self._timeout)


class OneTrip:
    """One statement whose answer is needed at once (the claim), in ONE round trip: its
    arguments are written into the text as literals (`literal`) and it is sent as `COPY
    (statement) TO STDOUT` through the simple query protocol, a single Query message that
    runs as its own implicit transaction; the rows come back as COPY text and are read
    with the `columns` given (name, converter). Nothing is prepared and no session state
    is left, so a transaction pooler sees one ordinary statement. The time limit is the
    client's, as with `Alone`.

    Where asyncpg's extended protocol needs two round trips without a statement cache
    (Parse+Describe, then Bind+Execute), this saves one per claim: on the idle path that
    round trip is most of the time from a NOTIFY to the claim's statement time."""

    __slots__ = ("_columns", "_pool", "_timeout")

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        timeout: float,
        columns: Sequence[tuple[str, Callable[[str], Any]]],
    ) -> None:
        self._pool = pool
        self._timeout = timeout
        self._columns = columns

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        text = _PLACEHOLDER.sub(lambda m: literal(args[int(m.group(1)) - 1]), _bare(sql))
        chunks: list[bytes] = []

        async def sink(data: bytes) -> None:
            chunks.append(data)

        async with self._pool.acquire() as conn:
            await conn.copy_from_query(text, output=sink, format="text", timeout=self._timeout)
        # COPY ends every row with a newline and escapes those inside values: split on it
        # alone (str.splitlines would also split on characters COPY leaves as they are).
        lines = b"".join(chunks).decode().split("\n")
        return [self._row(line) for line in lines[:-1]]

    def _row(self, line: str) -> dict[str, Any]:
        fields = line.split("\t")
        if len(fields) != len(self._columns):
            raise asyncpg.InterfaceError(
                f"expected {len(self._columns)} columns, got {len(fields)}: {line[:200]!r}"
            )
        return {
            name: None if raw == "\\N" else convert(_COPY_ESCAPE.sub(_unescape, raw))
            for (name, convert), raw in zip(self._columns, fields, strict=True)
        }


_PLACEHOLDER = re.compile(r"\$(\d+)")


@functools.cache
def _bare(sql: str) -> str:
    """The statement without its comment lines: a literal written into a comment could end
    it with a newline, so a statement that keeps a comment (or has `$n` inside a quoted
    string) is refused rather than filled in."""
    lines = [line for line in sql.strip().splitlines() if not line.lstrip().startswith("--")]
    bare = "\n".join(lines).rstrip().rstrip(";")
    if "--" in bare or "/*" in bare or "'" in bare or '"' in bare:
        raise ValueError(f"OneTrip takes statements without comments or quotes: {bare[:80]!r}")
    return bare


_COPY_ESCAPE = re.compile(r"\\(.)")
_COPY_CHARS = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}


def _unescape(m: re.Match[str]) -> str:
    return _COPY_CHARS.get(m.group(1), m.group(1))


def copy_bool(raw: str) -> bool:
    """A boolean as COPY text writes it."""
    return raw == "t"


def literal(value: Any) -> str:
    """An SQL literal for `value` (None, bool, int, float, str, or a list of those), safe
    under either setting of standard_conforming_strings (E'' strings, backslashes and quotes
    doubled). Text with a NUL byte is refused: PostgreSQL text cannot hold one."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"not a finite number: {value!r}")
        return repr(value)
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("text with a NUL byte cannot be sent to PostgreSQL")
        return "E'" + value.replace("\\", "\\\\").replace("'", "''") + "'"
    if isinstance(value, (list, tuple)):
        if not value:
            return "'{}'"
        return "ARRAY[" + ", ".join(literal(v) for v in value) + "]"
    raise TypeError(f"no SQL literal for {type(value).__name__}")


async def run_to_end(work: Coroutine[Any, Any, T]) -> T:
    """Run database work in a task of its own that a cancellation of the caller does not
    interrupt: the caller's CancelledError waits for the work to end, then goes on.

    Cancelling a coroutine that awaits a statement makes asyncpg send a cancel request (a
    new connection, a round trip) and roll back; through PgBouncer 1.18, the version
    Debian ships, a cancel request racing a closing server connection can crash the pooler
    for every client (pgbouncer#801). A statement runs for milliseconds and its
    statement_timeout bounds it, so letting it finish is cheaper and never risks that.
    A second cancellation ends the wait; the work still finishes in the background."""
    task = asyncio.ensure_future(work)
    task.add_done_callback(_retrieve)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        if not task.done():
            await asyncio.wait([task])
        raise


async def pooled_transaction_to_end(
    pool: asyncpg.Pool,
    settings: Settings,
    work: Callable[[asyncpg.Connection], Awaitable[T]],
    *,
    durable: bool = True,
) -> T:
    """`work(conn)` in one pooled transaction that a cancellation lets finish (run_to_end).
    Only the transaction is shielded: waiting for a connection has no statement in flight,
    so a cancellation still ends that wait at once.

    The shielded task, not the caller, gives the connection back, once the transaction has
    ended: a second cancellation, which stops the caller's wait, must not release the
    connection under a statement still running (the pool's reset would find it busy and
    kill it, and the statement with it)."""
    conn = await pool.acquire()

    async def in_transaction() -> T:
        try:
            async with transaction(conn, settings, durable=durable):
                return await work(conn)
        finally:
            await pool.release(conn)

    return await run_to_end(in_transaction())


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Its error belongs to the caller, who was cancelled instead: no 'never retrieved' noise."""
    if not task.cancelled():
        task.exception()
