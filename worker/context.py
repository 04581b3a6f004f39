"""What a running job sees: its claimed row, and per-phase transactions guarded by ownership."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg

from . import connections
from .errors import JobLost, ShuttingDown
from .metrics import Metrics
from .settings import Settings
from .sql import q

T = TypeVar("T")

# Seconds between two progress writes of one job. Each is an UPDATE of the job row that
# fires its statement triggers; a phase every few milliseconds (a small site's files, a big
# one's chunks) writing its progress each time was most of the server's work on many small
# sites (issue 21). Progress noted meanwhile rides on the first phase after the interval.
PROGRESS_EVERY = 1.0


class Detach:
    """Returned by a handler whose job ends later, by other means (a batch ends with its
    last child): the worker lets go of it without writing a final status."""

    def __repr__(self) -> str:
        return "DETACH"


DETACH = Detach()


@dataclass(slots=True)
class ClaimedJob:
    """The row as the claim returned it."""

    id: int
    job_type: str
    payload: str
    attempts: int
    max_attempts: int
    priority: int = 0
    parent_id: int | None = None
    waited: float = 0.0  # seconds from runnable to claimed, by the database's clock

    @classmethod
    def from_record(cls, row: asyncpg.Record) -> ClaimedJob:
        return cls(
            row["id"],
            row["job_type"],
            row["payload"],
            row["attempts"],
            row["max_attempts"],
            row["priority"],
            row["parent_id"],
            row["waited"],
        )


class JobContext:
    """Handed to a job's handler. Network I/O happens between phases, never inside one."""

    def __init__(
        self,
        job: ClaimedJob,
        owner: str,
        pool: asyncpg.Pool,
        settings: Settings,
        stopping: asyncio.Event,
        resources: dict[str, Any] | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.job = job
        self.metrics = metrics or Metrics()
        self.owner = owner
        self.pool = pool
        self.settings = settings
        self._stopping = stopping
        self._resources = resources if resources is not None else {}
        self._progress: float | None = None  # noted, not yet written
        self._progress_at = time.monotonic()  # the last write, or the job's start

    def resource(self, name: str, factory: Callable[[], Any]) -> Any:
        """A per-worker object shared by its jobs (the HTTP session), made on first use
        and closed by the worker when it stops."""
        if name not in self._resources:
            self._resources[name] = factory()
        return self._resources[name]

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def check(self) -> None:
        """Raise ShuttingDown at a phase boundary once the worker is stopping."""
        if self._stopping.is_set():
            raise ShuttingDown("worker shutting down")

    def note_progress(self, progress: float) -> None:
        """Progress to show (0..1): a later phase writes it, at most once per
        PROGRESS_EVERY per job; the job's final status sets 1 anyway."""
        self._progress = progress

    def _due_progress(self, explicit: float | None) -> float | None:
        """What this phase writes: progress given to it, else noted progress once due."""
        if explicit is not None:
            return explicit
        if self._progress is None or time.monotonic() - self._progress_at < PROGRESS_EVERY:
            return None
        due, self._progress = self._progress, None
        self._progress_at = time.monotonic()  # taken now: phases side by side write it once
        return due

    async def run_phase(
        self,
        work: Callable[[asyncpg.Connection], Awaitable[T]],
        progress: float | None = None,
        *,
        durable: bool = True,
    ) -> T:
        """`work(conn)` as one phase: one short transaction on a pooled connection whose
        writes commit only while this worker still owns the job: if it was cancelled or
        taken over, everything rolls back and JobLost stops the work. The check share-locks
        the job row until the commit, so a cancel or a take-over waits for the phase; it
        renews no lease (the heartbeat does) and writes the row only for progress: the
        `progress` given, or what note_progress left once PROGRESS_EVERY has passed.

        The phase runs to its end even when the job's task is cancelled meanwhile (a failed
        sibling, a cancelled job, the shutdown deadline): no statement is interrupted, so no
        cancel request goes out (see connections.run_to_end). The cancellation then carries
        on from here.

        `durable=False` commits without waiting for the WAL flush, for writes a re-run
        would redo anyway (see connections.transaction): the job's final status is always
        durable, and its flush carries every earlier commit with it."""
        self.check()
        due = self._due_progress(progress)

        async def guarded(conn: asyncpg.Connection) -> T:
            result = await work(conn)
            await self._still_ours(conn, due)
            return result

        return await connections.pooled_transaction_to_end(
            self.pool, self.settings, guarded, durable=durable
        )

    async def _still_ours(self, conn: asyncpg.Connection, progress: float | None) -> None:
        owned = await conn.fetchval(q("guard_phase"), self.job.id, self.owner, progress)
        if owned is None:
            raise JobLost(f"job {self.job.id} was cancelled or lost its lease")

    async def sleep(self, seconds: float) -> None:
        """Wait, but give way at once to a shutdown: the job goes back to pending."""
        self.check()
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
        except TimeoutError:
            return
        raise ShuttingDown("worker shutting down")

    def extra(self) -> dict[str, Any]:
        return {"job_id": self.job.id, "job_type": self.job.job_type}
