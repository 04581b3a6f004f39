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

from . import db
from .context import DETACH, ClaimedJob, JobContext
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


def _unexpected(exc: BaseException) -> bool:
    """Neither the database's answer nor a lost connection: a bug, worth a traceback."""
    return not isinstance(exc, CONNECTION_ERRORS + (asyncpg.PostgresError,))


def make_owner_id() -> str:
    """Unique per process run, readable in `jobs.owner`."""
    return f"{socket.gethostname()}:{os.getpid()}:{random.getrandbits(24):06x}"


@dataclass(slots=True)
class Running:
    task: asyncio.Task[None]
    ctx: JobContext
    cancel_reason: str | None = None  # "lost" (cancelled/taken over) or "shutdown"
    started: float = field(default_factory=time.monotonic)


class Worker:
    """One worker process's engine. `run()` returns after a stop request or, with
    `burst=True`, once no runnable job is left."""

    def __init__(self, pool: asyncpg.Pool, settings: Settings, registry: Registry, *,
                 concurrency: int | None = None, burst: bool = False, owner: str | None = None,
                 metrics: Metrics | None = None) -> None:
        self.pool = pool
        self.settings = settings
        self.registry = registry
        self.concurrency = concurrency or settings.concurrency
        self.burst = burst
        self.owner = owner or make_owner_id()
        self.running: dict[int, Running] = {}
        self.metrics = metrics or Metrics()
        self.metrics.watch(running=lambda: len(self.running))
        self.outcomes = OutcomeWriter(pool, settings, self.owner, self.metrics)
        self.stopping = asyncio.Event()
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
        while (self._claims_ended < target and len(self.running) < self.concurrency
               and not self.stopping.is_set()):
            self._claim_ended.clear()
            await self._claim_ended.wait()

    def request_stop(self) -> None:
        self.stopping.set()
        self._wake.set()

    # -- main loop ------------------------------------------------------------------------

    async def run(self) -> None:
        writer = asyncio.create_task(self.outcomes.run(), name="outcome-writer")
        heartbeat = asyncio.create_task(self._heartbeat(), name="heartbeat")
        try:
            await self._loop()
            await self._shutdown()
        finally:
            heartbeat.cancel()
            await self.outcomes.wait_idle()
            writer.cancel()
            await asyncio.gather(heartbeat, writer, return_exceptions=True)
            for resource in self.resources.values():
                close = getattr(resource, "close", None)
                if close is not None:
                    await close()

    async def _loop(self) -> None:
        while not self.stopping.is_set():
            self._wake.clear()
            notified, self._notified = self._notified, False
            free = self.concurrency - len(self.running)
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
                if self.burst and got == 0 and not self.running and self._claim_failing_since is None:
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
        try:
            async with db.pooled_transaction(self.pool, self.settings, durable=False) as conn:
                # Jobs still ours (running, or their outcome not yet written) are never
                # re-claimed by us, even with an expired lease: see migration 0006.
                ours = [*self.running, *self.outcomes.unwritten()]
                rows = await conn.fetch(q("claim_jobs"), self.owner, n, self.settings.lease.total_seconds(),
                                        ours)
        except Exception as exc:  # whatever it is, the loop lives on and tries again
            if self._claim_failing_since is None:
                self._claim_failing_since = time.monotonic()
                log.warning("cannot claim jobs: %s; retrying every %.1f s", describe(exc),
                            self.settings.poll_interval.total_seconds(), exc_info=_unexpected(exc))
            return []
        if self._claim_failing_since is not None:
            log.warning("claiming again after %.1f s", time.monotonic() - self._claim_failing_since)
            self._claim_failing_since = None
        self.claimed += len(rows)
        jobs = [ClaimedJob.from_record(r) for r in rows]
        for job in jobs:
            self.metrics.claimed.labels(job.job_type).inc()
            self.metrics.pickup.observe(job.waited)
        return jobs

    # -- one job --------------------------------------------------------------------------

    def _start(self, job: ClaimedJob) -> None:
        ctx = JobContext(job, self.owner, self.pool, self.settings, self.stopping, self.resources,
                         self.metrics)
        task = asyncio.create_task(self._run_job(ctx), name=f"job-{job.id}")
        self.running[job.id] = Running(task, ctx)

    async def _run_job(self, ctx: JobContext) -> None:
        job = ctx.job
        current_job.set((job.id, job.job_type))  # this task's log lines carry the job's id
        began = time.monotonic()
        log.info("job %d %s started (attempt %d/%d)", job.id, job.job_type, job.attempts, job.max_attempts)
        outcome: Outcome | None
        try:
            job_type, payload = self.registry.resolve(job.job_type, job.payload)
            result = await job_type.handler(ctx, payload)
            if result is DETACH:
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
            delay = retry_delay(job.attempts, self.settings.retry_base.total_seconds(),
                                self.settings.retry_cap.total_seconds())
        return Outcome(job, "retry", error=message, delay=delay)

    # -- leases ---------------------------------------------------------------------------

    async def _heartbeat(self) -> None:
        """Renew every running job's lease in one statement; a job missing from the answer
        was cancelled from SQL or taken over, so its task is stopped."""
        interval = self.settings.heartbeat_interval.total_seconds()
        failing = False
        while True:
            await asyncio.sleep(interval)
            ids = list(self.running)
            if not ids:
                continue
            try:
                rows = await db.pooled_transaction_to_end(  # cancelled at exit: a renewal ends first
                    self.pool, self.settings, lambda conn, ids=ids: self._renew(conn, ids), durable=False)
            except Exception as exc:  # the heartbeat must outlive any one failure
                if not failing:
                    log.warning("cannot renew leases: %s", describe(exc), exc_info=_unexpected(exc))
                failing = True
                continue
            failing = False
            alive = {r["id"] for r in rows}
            for job_id in ids:
                running = self.running.get(job_id)
                if job_id not in alive and running is not None and running.cancel_reason is None:
                    running.cancel_reason = "lost"
                    running.task.cancel()

    async def _renew(self, conn: asyncpg.Connection, ids: list[int]) -> list[asyncpg.Record]:
        return await conn.fetch(q("renew_leases"), self.owner, ids, self.settings.lease.total_seconds())

    # -- shutdown -------------------------------------------------------------------------

    async def _shutdown(self) -> None:
        """Stop claiming; give running jobs the grace period, less the time kept back for the
        hand-over, to reach a phase boundary or finish; then hand what is left back to
        pending without burning an attempt. The whole shutdown fits in the grace period,
        as an orchestrator's kill deadline (Kubernetes' terminationGracePeriodSeconds,
        docker stop -t) expects."""
        if not self.running:
            return
        grace = self.settings.shutdown_grace.total_seconds()
        for_jobs = grace - min(HANDOVER_RESERVE, grace / 4)
        log.info("stopping: waiting up to %.1f s for %d running job(s)", for_jobs, len(self.running))
        tasks = [r.task for r in self.running.values()]
        await asyncio.wait(tasks, timeout=for_jobs)
        for running in list(self.running.values()):
            running.cancel_reason = "shutdown"
            running.task.cancel()
        # A cancelled job first lets its statement in flight end (db.run_to_end), which takes
        # milliseconds unless the database is in trouble: half the reserve at most, so the
        # hand-over still fits. A job not back by then keeps its lease until it expires.
        await asyncio.wait(tasks, timeout=min(HANDOVER_RESERVE, grace / 4) / 2)
