"""What a running job sees: its claimed row, and per-phase transactions guarded by ownership."""

from __future__ import annotations

import asyncio
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

    async def run_phase(
        self,
        work: Callable[[asyncpg.Connection], Awaitable[T]],
        progress: float | None = None,
        *,
        durable: bool = True,
    ) -> T:
        """`work(conn)` as one phase: one short transaction on a pooled connection whose
        writes commit together with the job's progress and a renewed lease, and only while
        this worker still owns the job: if it was cancelled or taken over, everything rolls
        back and JobLost stops the work.

        The phase runs to its end even when the job's task is cancelled meanwhile (a failed
        sibling, a cancelled job, the shutdown deadline): no statement is interrupted, so no
        cancel request goes out (see connections.run_to_end). The cancellation then carries
        on from here.

        `durable=False` commits without waiting for the WAL flush, for writes a re-run
        would redo anyway (see connections.transaction): the job's final status is always
        durable, and its flush carries every earlier commit with it."""
        self.check()

        async def guarded(conn: asyncpg.Connection) -> T:
            result = await work(conn)
            await self._still_ours(conn, progress)
            return result

        return await connections.pooled_transaction_to_end(
            self.pool, self.settings, guarded, durable=durable
        )

    async def _still_ours(self, conn: asyncpg.Connection, progress: float | None) -> None:
        owned = await conn.fetchval(
            q("record_progress"),
            self.job.id,
            self.owner,
            progress,
            self.settings.lease.total_seconds(),
        )
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
