"""Writes jobs' final states, batched, each flush in its own transaction.

Completions queue up while a flush is in flight and go out together in one statement (like
group commit, with no timer). If a batch statement fails, each job is written alone, so one
bad row can never roll back another job's status.

A job stays the worker's until its outcome is written: it holds a slot (the engine counts
`held`), and its lease is renewed by the heartbeat while it waits (`renewable`). The write
in flight is the exception: its rows are locked by that very statement (a claim skips
locked rows), and a renewal would only queue behind it (`renewable` leaves it out), and
`write_timeout` ends a write before the lease it started with.

Completions queued when the engine claims go out in the claim's own statement
(`take_completions`): the slots they free are refilled in the same commit. Every write here
is one statement, sent as its own implicit transaction with a client-side time limit
(connections.Alone).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Literal

import asyncpg

from . import connections
from .context import ClaimedJob
from .errors import CONNECTION_ERRORS, describe
from .metrics import Metrics
from .settings import Settings
from .sql import q

log = logging.getLogger(__name__)

OutcomeKind = Literal["completed", "failed", "retry", "released", "detached"]

BATCH_LIMIT = 1000
RETRY_DELAY_CAP = 1.0  # seconds between write attempts, at most


@dataclass(slots=True)
class Outcome:
    job: ClaimedJob
    kind: OutcomeKind
    result: dict[str, Any] | None = None
    error: str | None = None
    delay: float = 0.0
    duration: float = field(default=0.0)
    settled: bool = False  # written, or known not to be ours any more, or given up on
    alone: bool = False  # a claim's transaction failed with it: only the writer writes it now


class OutcomeWriter:
    """Owns the final-status writes of one worker."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        settings: Settings,
        owner: str,
        metrics: Metrics | None = None,
        *,
        on_settled: Callable[[], None] | None = None,
    ) -> None:
        self._pool = pool
        self._metrics = metrics or Metrics()
        self._settings = settings
        self._owner = owner
        self._on_settled = on_settled or (lambda: None)
        self._queue: list[Outcome] = []
        self._held: dict[int, Outcome] = {}  # submitted, not yet settled
        self._in_statement: Counter[int] = Counter()  # rows of the writes in flight
        self._ready = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._retry_now = asyncio.Event()  # the database answered someone: retry at once
        # When the heartbeat's last successful renewal began (its list of jobs is as of then).
        self.renewed_at = time.monotonic()
        self.written = 0
        self.write_timeout = write_timeout(settings)

    def database_answered(self) -> None:
        """A statement of this worker succeeded: a write waiting to retry goes now."""
        self._retry_now.set()

    def submit(self, outcome: Outcome) -> None:
        self._queue.append(outcome)
        self._held[outcome.job.id] = outcome
        self._idle.clear()
        self._ready.set()

    # -- completions that ride along with a claim ------------------------------------------
    # Jobs ending and jobs starting in one transaction: one commit instead of two, and the
    # slots the completions free are taken in the same instant, never before.

    def takeable(self) -> int:
        """Queued completions a claim may write in its own transaction."""
        return sum(1 for o in self._queue if o.kind == "completed" and not o.alone)

    def take_completions(self) -> list[Outcome]:
        """Hands queued completions to a claim: `claim_statement`, `complete_in`, then
        `report` on commit or `give_back` on failure."""
        taken = [o for o in self._queue if o.kind == "completed" and not o.alone][:BATCH_LIMIT]
        if taken:
            ids = {id(o) for o in taken}
            self._queue = [o for o in self._queue if id(o) not in ids]
        return taken

    def claim_statement(self, taken: list[Outcome]) -> AbstractAsyncContextManager[None]:
        return self._statement(taken) if taken else nullcontext()

    @staticmethod
    def results_of(taken: list[Outcome]) -> list[str]:
        """The taken completions' results as the claim statement sends them (json text)."""
        return [_dump(o.result) for o in taken]

    def report(self, taken: list[Outcome], written: set[int]) -> None:
        self._report(taken, written)

    def give_back(self, taken: list[Outcome]) -> None:
        """The claim's transaction failed: the writer writes these on its own (and isolates
        a row the database refuses)."""
        for o in taken:
            o.alone = True
        self._queue[:0] = taken
        self._ready.set()

    @property
    def idle(self) -> bool:
        return self._idle.is_set()

    @property
    def held(self) -> int:
        """Jobs whose outcome is not written yet: each still holds a worker slot."""
        return len(self._held)

    async def wait_idle(self) -> None:
        """Until every submitted outcome is written (or given up on): none held."""
        await self._idle.wait()

    async def run(self) -> None:
        """The flush loop; runs until cancelled."""
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self._queue:
                batch, self._queue = self._queue, []
                await self._write_with_retry(batch)

    def unwritten(self) -> list[int]:
        """Jobs whose outcome is queued or being written: still this worker's, whatever
        their lease says."""
        return list(self._held)

    def renewable(self) -> list[int]:
        """Held jobs whose rows no write of ours has in hand: the heartbeat renews these."""
        return [job_id for job_id in self._held if not self._in_statement[job_id]]

    @asynccontextmanager
    async def _statement(self, outcomes: list[Outcome]) -> AsyncIterator[None]:
        """Marks the rows one write is about to lock: the heartbeat leaves them out, and
        so never queues behind a write of ours (a renewal that took its snapshot just
        before waits at most `write_timeout`; a deadlock between the two is retried)."""
        ids = Counter(o.job.id for o in outcomes)
        self._in_statement.update(ids)
        try:
            yield
        finally:
            self._in_statement.subtract(ids)
            self._in_statement = +self._in_statement  # drop the zeros

    async def _write_with_retry(self, batch: list[Outcome]) -> None:
        """A dead connection, or a statement the database could not finish (a timeout, a
        deadlock, a lock it gave up on), is retried for what is not written yet; the
        heartbeat keeps the jobs' leases meanwhile. After a whole lease with neither a write
        nor a renewal the rest is given up: their leases have expired, another worker
        re-runs those jobs, and our guarded write would touch nothing."""
        delay, failing_since = 0.05, time.monotonic()
        while todo := [o for o in batch if not o.settled]:
            try:
                await self._write(todo)
                return
            except Exception as exc:
                if not _transient(exc):  # not the connection: never the end of the writer
                    log.error(
                        "cannot write %d job outcome(s): %s",
                        len(todo),
                        describe(exc),
                        exc_info=not isinstance(exc, asyncpg.PostgresError),
                    )
                    self._settle([o for o in todo if not o.settled])
                    return
                lease = self._settings.lease.total_seconds()
                if time.monotonic() + delay - max(failing_since, self.renewed_at) > lease:
                    log.error("giving up writing %d job outcome(s): %s", len(todo), describe(exc))
                    self._settle([o for o in todo if not o.settled])
                    return
                if delay == 0.05:
                    log.warning("cannot write job outcomes yet (%s); retrying", describe(exc))
                await self._pause_before_retry(time.monotonic(), delay)
                delay = min(delay * 2, RETRY_DELAY_CAP)

    async def _pause_before_retry(self, failed_at: float, delay: float) -> None:
        """Wait until the heartbeat has renewed the jobs since the failure, then retry at once.

        While the write held their rows the heartbeat left them out; a retry that took them
        again straight away could hold them past their lease, and another worker's claim
        would take a job whose outcome we are about to write. The jobs keep their slots
        meanwhile. The wait is bounded (two heartbeats, at most a quarter lease, at least
        `delay`): a stop in progress or a database that does not answer never holds it."""
        heartbeat = self._settings.heartbeat_interval.total_seconds()
        lease = self._settings.lease.total_seconds()
        limit = max(delay, min(2 * heartbeat, lease / 4))
        try:
            async with asyncio.timeout(limit):
                while self.renewed_at <= failed_at:
                    self._retry_now.clear()
                    await self._retry_now.wait()
        except TimeoutError:
            pass

    async def _write(self, batch: list[Outcome]) -> None:
        completed = [o for o in batch if o.kind == "completed"]
        released = [o for o in batch if o.kind == "released"]
        for start in range(0, len(completed), BATCH_LIMIT):
            await self._complete(completed[start : start + BATCH_LIMIT])
        if released:
            await self._release(released)
        for outcome in batch:
            if outcome.kind in ("failed", "retry", "detached"):
                await self._write_one(outcome)

    async def _complete(self, chunk: list[Outcome]) -> None:
        chunk = [o for o in chunk if not o.settled]
        if not chunk:
            return
        try:
            async with self._statement(chunk):
                rows = await self._alone().fetch(
                    q("complete_jobs"),
                    self._owner,
                    [o.job.id for o in chunk],
                    [_dump(o.result) for o in chunk],
                )
        except Exception as exc:
            if _transient(exc) or not isinstance(exc, asyncpg.PostgresError):
                raise
            if len(chunk) > 1:  # isolate the bad row
                for outcome in chunk:
                    await self._complete([outcome])
                return
            # The result itself cannot be stored: the job fails with the database's reason.
            only = chunk[0]
            await self._write_one(
                Outcome(
                    only.job,
                    "failed",
                    duration=only.duration,
                    error=f"could not store result: {describe(exc)}",
                )
            )
            self._settle([only])
            return
        self._report(chunk, {r["id"] for r in rows})

    async def _release(self, outcomes: list[Outcome]) -> None:
        async with self._statement(outcomes):
            rows = await self._alone().fetch(
                q("release_jobs"), self._owner, [o.job.id for o in outcomes]
            )
        self._report(outcomes, {r["id"] for r in rows})

    async def _write_one(self, outcome: Outcome) -> None:
        job = outcome.job
        alone = self._alone()
        async with self._statement([outcome]):
            if outcome.kind == "retry":
                done = await alone.fetchval(
                    q("retry_job"), job.id, self._owner, outcome.error, outcome.delay
                )
            elif outcome.kind == "detached":
                done = await alone.fetchval(q("detach_job"), job.id, self._owner)
            else:
                done = await alone.fetchval(q("fail_job"), job.id, self._owner, outcome.error)
        self._report([outcome], {done} if done is not None else set())

    def _alone(self) -> connections.Alone:
        """A final write: one statement, its own (durable) transaction, cut at write_timeout."""
        return connections.Alone(self._pool, timeout=self.write_timeout)

    def _settle(self, outcomes: list[Outcome]) -> None:
        """These jobs are no longer held: their slots are free."""
        for o in outcomes:
            o.settled = True
            if self._held.get(o.job.id) is o:
                del self._held[o.job.id]
        if not self._held:
            self._idle.set()
        self._on_settled()

    def _report(self, outcomes: list[Outcome], written: set[int]) -> None:
        """The job's end-of-run log line; a guard that touched nothing is said plainly."""
        self.written += len(written)
        self._settle(outcomes)
        # One row is written once: should two outcomes of one job share a write (the job was
        # claimed again while an older run of it still ran, after a server crash lost the
        # first claim), only the first is reported written.
        unreported = set(written)
        for o in outcomes:
            job = o.job
            extra = {"job_id": job.id, "job_type": job.job_type}
            if job.id not in unreported:
                log.info(
                    "job %d %s: outcome %s not written (cancelled or taken over)",
                    job.id,
                    job.job_type,
                    o.kind,
                    extra=extra,
                )
                continue
            unreported.discard(job.id)
            self._count(o)
            if o.kind == "completed":
                log.info(
                    "job %d %s completed in %.1f ms",
                    job.id,
                    job.job_type,
                    o.duration * 1000,
                    extra=extra,
                )
            elif o.kind == "retry":
                log.warning(
                    "job %d %s failed (attempt %d/%d), retry in %.1f s: %s",
                    job.id,
                    job.job_type,
                    job.attempts,
                    job.max_attempts,
                    o.delay,
                    o.error,
                    extra=extra,
                )
            elif o.kind == "detached":
                log.info(
                    "job %d %s handed over: it ends when its child jobs have ended",
                    job.id,
                    job.job_type,
                    extra=extra,
                )
            elif o.kind == "released":
                log.info(
                    "job %d %s released to pending (shutdown)", job.id, job.job_type, extra=extra
                )
            else:
                log.warning(
                    "job %d %s failed after %.1f ms: %s",
                    job.id,
                    job.job_type,
                    o.duration * 1000,
                    o.error,
                    extra=extra,
                )

    def _count(self, o: Outcome) -> None:
        counter = {
            "completed": self._metrics.completed,
            "failed": self._metrics.failed,
            "retry": self._metrics.retried,
            "released": self._metrics.released,
        }.get(o.kind)
        if counter is None:  # detached: its children are counted as they end
            return
        counter.labels(o.job.job_type).inc()
        self._metrics.duration.labels(o.job.job_type, o.kind).observe(o.duration)


# SQLSTATEs that say the database could not finish the statement, not that it refused the
# data: a rollback (serialization failure, deadlock), too few resources, a connection
# failure, an operator intervention (statement_timeout is 57014), a lock not available.
_TRANSIENT_SQLSTATE_PREFIXES = ("40", "53", "08", "57", "55P03")


def write_timeout(settings: Settings) -> float:
    """A final write locks its rows and stops their renewals while it runs (`renewable`): it
    may not run past the lease it started with, so a write that fails leaves them to the
    heartbeat, never claimable by another worker. The lease was renewed at most a
    heartbeat ago; once the write has given up, the heartbeat has the other half of the
    lease (less that heartbeat) to renew the rows: a wide margin, so that a loaded machine
    that runs the heartbeat late still renews them in time. Final writes are tiny: half a
    lease (15 s by default) is far more than one needs."""
    return min(settings.statement_timeout.total_seconds(), settings.lease.total_seconds() / 2)


def _transient(exc: BaseException) -> bool:
    """Worth writing again later, as opposed to a write the database refuses (bad data, a
    trigger that raises): those fail the job, or are given up on."""
    if isinstance(exc, CONNECTION_ERRORS):
        return True
    state = getattr(exc, "sqlstate", None) or ""
    return isinstance(exc, asyncpg.PostgresError) and state.startswith(_TRANSIENT_SQLSTATE_PREFIXES)


def _dump(result: dict[str, Any] | None) -> str:
    return json.dumps(result if result is not None else {}, default=str, separators=(",", ":"))
