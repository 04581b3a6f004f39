"""The worker loop: claim in batches, run each job as a task, renew leases, shut down cleanly.

The loop is a few lines: claim until the free slots are full or nothing is runnable, then
wait for a wake-up (NOTIFY, a finished job, a listener reconnect), a trailing-edge poll
right after a NOTIFY, or the fallback poll timer.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import time
from dataclasses import dataclass, field

import asyncpg

from . import connections
from .context import ClaimedJob, Detach, JobContext
from .errors import (
    CONNECTION_ERRORS,
    JobLost,
    PermanentJobError,
    RetryableJobError,
    ShuttingDown,
    describe,
    is_permanent,
    retry_delay,
)
from .jobs.registry import Registry
from .logs import current_job
from .metrics import Metrics
from .outcomes import Outcome, OutcomeWriter
from .settings import Settings
from .sql import q

log = logging.getLogger(__name__)


# Seconds of the shutdown grace kept back for handing unfinished jobs back (a quarter of
# the grace when that is shorter): the hand-over is one statement, measured at ~0.1 s.
HANDOVER_RESERVE = 1.0


# sitemap_worker_end_and_claim's answer, as COPY text (connections.OneTrip).
CLAIM_COLUMNS = (
    ("id", int),
    ("claimed", connections.copy_bool),
    ("job_type", str),
    ("payload", str),
    ("attempts", int),
    ("max_attempts", int),
    ("priority", int),
    ("parent_id", int),
    ("waited", float),
)


def _unexpected(exc: BaseException) -> bool:
    """Neither the database's answer nor a lost connection: a bug, worth a traceback."""
    return not isinstance(exc, (*CONNECTION_ERRORS, asyncpg.PostgresError))


def make_owner_id() -> str:
    """Unique per process run, readable in `jobs.owner`."""
    return f"{socket.gethostname()}:{os.getpid()}:{random.getrandbits(24):06x}"


@dataclass(slots=True)
class Running:
    task: asyncio.Task[None]
    ctx: JobContext
    cancel_reason: str | None = None  # "lost" (cancelled/taken over) or "shutdown"
    started: float = field(default_factory=time.monotonic)


class JobLoop:
    """One worker process's loop over its jobs. `run()` returns after a stop request or, with
    `burst=True`, once no runnable job is left."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        settings: Settings,
        registry: Registry,
        *,
        concurrency: int | None = None,
        burst: bool = False,
        owner: str | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.pool = pool
        self.settings = settings
        self.registry = registry
        self.concurrency = concurrency or settings.concurrency
        self.burst = burst
        self.owner = owner or make_owner_id()
        self.running: dict[int, Running] = {}
        self.metrics = metrics or Metrics()
        self.metrics.watch(running=lambda: len(self.running))
        self.outcomes = OutcomeWriter(
            pool, settings, self.owner, self.metrics, on_settled=self.wake
        )
        self.stopping = asyncio.Event()
        self._stop_deadline: float | None = None  # loop time by which run() must return
        self._wake = asyncio.Event()
        self._notified = False
        self._claims_begun = self._claims_ended = 0
        self._claim_ended = asyncio.Event()
        self._claim_failing_since: float | None = None
        self.claimed = 0
        self.resources: dict[str, object] = {}  # shared by this worker's jobs; closed on exit

    # -- wake-ups -------------------------------------------------------------------------

    def notify(self) -> None:
        """Called by the listener on NOTIFY: only sets an event."""
        self._notified = True
        self._wake.set()

    def wake(self) -> None:
        """Claim now (a listener reconnect's catch-up, or a freed slot)."""
        self._wake.set()

    async def caught_up(self) -> None:
        """Wake the claim loop and wait until a claim that began after this call has ended
        (or no slot is free to claim for). "ready" waits for this after the listener's
        first connect, so a job inserted once a worker says ready is not already claimed
        by that connect's catch-up claim: it is there to be woken for."""
        target = self._claims_begun + 1
        self.wake()
        while (
            self._claims_ended < target
            and self.held() < self.concurrency
            and not self.stopping.is_set()
        ):
            self._claim_ended.clear()
            await self._claim_ended.wait()

    def request_stop(self) -> None:
        if self._stop_deadline is None:
            self._stop_deadline = (
                asyncio.get_running_loop().time() + self.settings.shutdown_grace.total_seconds()
            )
        self.stopping.set()
        self._wake.set()

    def held(self) -> int:
        """Jobs this worker holds: running, or ended with their outcome not yet written.
        A slot is free only once its job's outcome is written, so a slow outcome writer
        slows claiming down instead of piling up claimed jobs."""
        return len(self.running) + self.outcomes.held

    def remaining_grace(self) -> float | None:
        """Seconds left of the shutdown grace (None: no stop was requested)."""
        if self._stop_deadline is None:
            return None
        return self._stop_deadline - asyncio.get_running_loop().time()

    # -- main loop ------------------------------------------------------------------------

    async def run(self) -> None:
        writer = asyncio.create_task(self.outcomes.run(), name="outcome-writer")
        heartbeat = asyncio.create_task(self._heartbeat(), name="heartbeat")
        claims = asyncio.create_task(self._loop(), name="claim-loop")
        cancelled = False  # from outside: no waiting for anything then
        try:
            await self._until_stopped(claims)
            await self._shutdown()
        except asyncio.CancelledError:
            cancelled = True
            raise
        finally:
            claims.cancel()
            if not cancelled:
                await self._drain_outcomes(writer)  # the heartbeat keeps their leases meanwhile
            heartbeat.cancel()
            writer.cancel()
            await _wait_ended([heartbeat, writer], 0 if cancelled else self._time_left(0.2))
            for resource in self.resources.values():
                close = getattr(resource, "close", None)
                if close is not None:
                    await close()

    async def _until_stopped(self, claims: asyncio.Task[None]) -> None:
        """Until the claim loop ends (burst) or a stop is requested; then the loop's claim
        in flight may end, but not past the time the jobs have (a database that does not
        answer must not eat the grace): it is cut short then, and rolls back."""
        stopped = asyncio.ensure_future(self.stopping.wait())
        try:
            await asyncio.wait([claims, stopped], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
        if not claims.done():
            await _wait_ended([claims], self._time_left(1.0))
        if claims.done() and not claims.cancelled():
            claims.result()  # the loop's own error, if any

    def _time_left(self, reserve_share: float) -> float | None:
        """Seconds until the shutdown deadline less `reserve_share` of the hand-over
        reserve (None: no stop requested, no deadline)."""
        left = self.remaining_grace()
        if left is None:
            return None
        grace = self.settings.shutdown_grace.total_seconds()
        return max(left - reserve_share * min(HANDOVER_RESERVE, grace / 4), 0.0)

    async def _drain_outcomes(self, writer: asyncio.Task[None]) -> None:
        """Every submitted outcome written; when stopping, only until 30% of the reserve is
        left, so that the rest of the exit still fits in the grace."""
        idle = asyncio.ensure_future(self.outcomes.wait_idle())
        try:
            await asyncio.wait(
                [idle, writer], timeout=self._time_left(0.3), return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            idle.cancel()
        if not self.outcomes.idle:
            log.warning(
                "shutdown grace ran out with %d job outcome(s) not written: their leases "
                "expire and other workers run them again",
                self.outcomes.held,
            )

    async def _loop(self) -> None:
        while not self.stopping.is_set():
            self._wake.clear()
            notified, self._notified = self._notified, False
            # Queued completions go out with the claim, in its transaction: their slots are
            # free the instant the new jobs are taken.
            free = self.concurrency - self.held() + self.outcomes.takeable()
            got = 0
            if free > 0:
                # Read before claiming: an outcome written during the claim (a retry) may
                # hold its row locked, and SKIP LOCKED would pass it by.
                settled = self.outcomes.idle and not self.running
                jobs = await self._claim(free)
                got = len(jobs)
                for job in jobs:
                    self._start(job)
                if got == free:
                    continue  # slots full; more may be waiting
                if (
                    self.burst
                    and got == 0
                    and not self.running
                    and self._claim_failing_since is None
                ):
                    if settled:
                        return
                    await self.outcomes.wait_idle()
                    continue
            await self._wait(self._next_timeout(notified, got))

    def _next_timeout(self, notified: bool, got: int) -> float:
        if self._claim_failing_since is not None:
            return self.settings.poll_interval.total_seconds()
        if notified or got:
            # A NOTIFY can be throttled away for jobs committed right after it.
            return self.settings.trailing_poll.total_seconds()
        return self.settings.poll_interval.total_seconds() * random.uniform(0.9, 1.1)

    async def _wait(self, timeout: float) -> None:
        try:
            async with asyncio.timeout(timeout):
                await self._wake.wait()
        except TimeoutError:
            pass

    async def _claim(self, n: int) -> list[ClaimedJob]:
        self._claims_begun += 1
        try:
            return await self._claim_some(n)
        finally:
            self._claims_ended += 1
            self._claim_ended.set()

    async def _claim_some(self, n: int) -> list[ClaimedJob]:
        """Up to `n` jobs, counting the slots of the completions written in the same
        statement (durable then, as every final status is): one statement, its own implicit
        transaction, one round trip (sitemap_worker_end_and_claim via connections.OneTrip)."""
        taken = self.outcomes.take_completions()
        written: set[int] = set()
        try:
            async with self.outcomes.claim_statement(taken):
                # Jobs still ours (running, or their outcome not yet written) are never
                # re-claimed by us, even with an expired lease: see migration 0006.
                ours = [*self.running, *self.outcomes.unwritten()]
                limit = (
                    self.outcomes.write_timeout
                    if taken
                    else self.settings.statement_timeout.total_seconds()
                )
                claim = connections.OneTrip(self.pool, timeout=limit, columns=CLAIM_COLUMNS)
                answer = await claim.fetch(
                    q("end_and_claim"),
                    self.owner,
                    [o.job.id for o in taken],
                    self.outcomes.results_of(taken),
                    n,
                    self.settings.lease.total_seconds(),
                    ours,
                )
        except BaseException as exc:  # whatever it is, the loop lives on and tries again
            if taken:
                self.outcomes.give_back(taken)
                if isinstance(exc, asyncpg.PostgresError):
                    # Maybe a completion the database refused: the writer writes each alone
                    # and sorts it out; the next claim, without them, says if it was the claim.
                    return []
            if not isinstance(exc, Exception):
                raise  # cancelled (a stop's deadline): the completions went back to the writer
            if self._claim_failing_since is None:
                self._claim_failing_since = time.monotonic()
                log.warning(
                    "cannot claim jobs: %s; retrying every %.1f s",
                    describe(exc),
                    self.settings.poll_interval.total_seconds(),
                    exc_info=_unexpected(exc),
                )
            return []
        rows = [r for r in answer if r["claimed"]]
        written = {r["id"] for r in answer if not r["claimed"]}
        if taken:
            self.outcomes.report(taken, written)
        self.outcomes.database_answered()
        if self._claim_failing_since is not None:
            log.warning("claiming again after %.1f s", time.monotonic() - self._claim_failing_since)
            self._claim_failing_since = None
        self.claimed += len(rows)
        jobs = [
            ClaimedJob(
                r["id"],
                r["job_type"],
                r["payload"],
                r["attempts"],
                r["max_attempts"],
                r["priority"],
                r["parent_id"],
                r["waited"],
            )
            for r in rows
        ]
        for job in jobs:
            self.metrics.claimed.labels(job.job_type).inc()
            self.metrics.pickup.observe(job.waited)
        return jobs

    # -- one job --------------------------------------------------------------------------

    def _start(self, job: ClaimedJob) -> None:
        ctx = JobContext(
            job, self.owner, self.pool, self.settings, self.stopping, self.resources, self.metrics
        )
        task = asyncio.create_task(self._run_job(ctx), name=f"job-{job.id}")
        self.running[job.id] = Running(task, ctx)

    async def _run_job(self, ctx: JobContext) -> None:
        job = ctx.job
        current_job.set((job.id, job.job_type))  # this task's log lines carry the job's id
        began = time.monotonic()
        log.info(
            "job %d %s started (attempt %d/%d)",
            job.id,
            job.job_type,
            job.attempts,
            job.max_attempts,
        )
        outcome: Outcome | None
        try:
            job_type, payload = self.registry.resolve(job.job_type, job.payload)
            result = await job_type.handler(ctx, payload)
            if isinstance(result, Detach):
                outcome = Outcome(job, "detached")
            else:
                outcome = Outcome(job, "completed", result=result or {})
        except asyncio.CancelledError:
            reason = self.running[job.id].cancel_reason
            if reason is None:
                raise
            outcome = Outcome(job, "released") if reason == "shutdown" else None
            if reason == "lost":
                log.info("job %d %s stopped: cancelled or lost its lease", job.id, job.job_type)
        except ShuttingDown:
            outcome = Outcome(job, "released")
        except JobLost as exc:
            log.info("job %d %s stopped: %s", job.id, job.job_type, exc)
            outcome = None
        except Exception as exc:  # the job's own failure: decide retry or fail
            outcome = self._failure(job, exc)
        finally:
            self.running.pop(job.id, None)
            self._wake.set()
        if outcome is not None:
            outcome.duration = time.monotonic() - began
            self.outcomes.submit(outcome)

    def _failure(self, job: ClaimedJob, exc: Exception) -> Outcome:
        message = describe(exc)
        if not isinstance(exc, PermanentJobError | RetryableJobError) and not is_permanent(exc):
            log.debug("job %d raised", job.id, exc_info=exc)
        if is_permanent(exc) or job.attempts >= job.max_attempts:
            return Outcome(job, "failed", error=message)
        delay = getattr(exc, "delay", None)
        if delay is None:
            delay = retry_delay(
                job.attempts,
                self.settings.retry_base.total_seconds(),
                self.settings.retry_cap.total_seconds(),
            )
        return Outcome(job, "retry", error=message, delay=delay)

    # -- leases ---------------------------------------------------------------------------

    async def _heartbeat(self) -> None:
        """Renew the lease of every job this worker holds, running or waiting for its
        outcome write, in one statement; a running job missing from the answer was
        cancelled from SQL or taken over, so its task is stopped. (An outcome the answer
        misses is written anyway: its guarded write touches nothing.)"""
        interval = self.settings.heartbeat_interval.total_seconds()
        failing = False
        while True:
            await asyncio.sleep(interval)
            ids = [*self.running, *self.outcomes.renewable()]
            if not ids:
                continue
            began = time.monotonic()  # the leases run from about now, and `ids` is as of now
            try:
                # Cancelled at exit: a renewal in flight ends first. One statement, its own
                # implicit transaction (sitemap_worker_renew commits it asynchronously).
                alone = connections.Alone(
                    self.pool, timeout=self.settings.statement_timeout.total_seconds()
                )
                rows = await connections.run_to_end(
                    alone.fetch(
                        q("renew_leases"), self.owner, ids, self.settings.lease.total_seconds()
                    )
                )
            except Exception as exc:  # the heartbeat must outlive any one failure
                if not failing:
                    log.warning("cannot renew leases: %s", describe(exc), exc_info=_unexpected(exc))
                failing = True
                continue
            failing = False
            self.outcomes.renewed_at = began
            self.outcomes.database_answered()
            alive = {r["id"] for r in rows}
            for job_id in ids:
                running = self.running.get(job_id)
                if job_id not in alive and running is not None and running.cancel_reason is None:
                    running.cancel_reason = "lost"
                    running.task.cancel()

    # -- shutdown -------------------------------------------------------------------------

    async def _shutdown(self) -> None:
        """Stop claiming; give running jobs the grace period, less the time kept back for the
        hand-over, to reach a phase boundary or finish; then hand what is left back to
        pending without burning an attempt. The whole shutdown fits in the grace period,
        counted from the stop request, as an orchestrator's kill deadline (Kubernetes'
        terminationGracePeriodSeconds, docker stop -t) expects."""
        if not self.running:
            return
        if self._stop_deadline is None:
            self.request_stop()
        log.info(
            "stopping: waiting up to %.1f s for %d running job(s)",
            self._time_left(1.0),
            len(self.running),
        )
        tasks = [r.task for r in self.running.values()]
        await _wait_ended(tasks, self._time_left(1.0))
        for running in list(self.running.values()):
            running.cancel_reason = "shutdown"
            running.task.cancel()
        # A cancelled job first lets its statement in flight end (connections.run_to_end), which
        # takes milliseconds unless the database is in trouble: half the reserve at most, so the
        # hand-over still fits. A job not back by then keeps its lease until it expires.
        await _wait_ended(tasks, self._time_left(0.5))


async def _wait_ended(tasks: list[asyncio.Task[None]], timeout: float | None) -> None:
    """asyncio.wait that takes no tasks and a timeout of None (no deadline) alike."""
    pending = [t for t in tasks if not t.done()]
    if pending:
        await asyncio.wait(pending, timeout=timeout)
