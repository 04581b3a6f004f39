"""Assembles a running worker: pool, listener, engine, signal handling."""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import signal
from collections.abc import Callable

import asyncpg

from . import connections
from .database_urls import Urls
from .domains.schedule import run_schedule
from .endpoint import Endpoint
from .engine import JobLoop
from .jobs import default_registry
from .listener import WAKEUP_CHANNEL, Listener
from .settings import Settings

log = logging.getLogger(__name__)

POOL_CLOSE_WAIT = 0.5  # seconds; an idle pool closes in a few milliseconds
LISTENER_STOP_WAIT = 1.0  # seconds; a stop cuts the listener's waits short at once


async def serve(
    urls: Urls,
    settings: Settings,
    *,
    concurrency: int | None = None,
    burst: bool = False,
    handle_signals: bool = True,
    stop: asyncio.Event | None = None,
) -> JobLoop:
    """Run until stopped (a signal, or `stop` being set; with burst, until nothing is
    runnable); returns the engine so callers can read its counters."""
    concurrency = concurrency or settings.concurrency
    pool = await connections.create_pool(
        urls.work, settings, size=settings.pool_size_for(concurrency)
    )
    worker = JobLoop(pool, settings, default_registry(), concurrency=concurrency, burst=burst)
    listener = None if burst else Listener(urls.direct, settings, worker.notify, worker.wake)
    if listener is not None:
        worker.metrics.watch(
            listener_state=lambda: listener.state, listener_reconnects=lambda: listener.reconnects
        )
    else:
        worker.metrics.watch(listener_state=lambda: "none")
    try:
        endpoint = await _start_endpoint(worker, listener, settings)
    except OSError as exc:  # the port is taken: say so plainly, before any job is claimed
        await pool.close()
        raise SystemExit(
            f"cannot serve metrics on {settings.metrics_host}:"
            f"{settings.metrics_port}: {exc.strerror or exc}"
        ) from None
    listen_task = asyncio.create_task(listener.run(), name="listener") if listener else None
    ready_task = asyncio.create_task(_announce(worker, listener, concurrency))
    if handle_signals:
        install_stop_signals(worker.stopping.is_set, worker.request_stop)
    stopper = asyncio.create_task(_stop_on(stop, worker)) if stop is not None else None
    # A stopping worker claims nothing more: the listener goes at once, off the grace's
    # critical path, instead of after the jobs.
    unlisten = asyncio.create_task(_stop_listener_on_stop(worker, listener)) if listener else None
    # Recurring scans (issue 19): every long-running worker ticks the domains' schedule.
    schedule = None if burst else asyncio.create_task(run_schedule(pool, settings, worker.stopping))
    try:
        await worker.run()
    finally:
        if schedule is not None:
            schedule.cancel()
            await asyncio.gather(schedule, return_exceptions=True)
        ready_task.cancel()
        if stopper is not None:
            stopper.cancel()
        if unlisten is not None:
            unlisten.cancel()
        if handle_signals:
            remove_stop_signals()
        if listener is not None and listen_task is not None:
            await listener.stop()
            await _bounded(listen_task, _time_left(worker, LISTENER_STOP_WAIT))
        if endpoint is not None:
            await endpoint.stop()
        await _close_pool(pool, _time_left(worker, POOL_CLOSE_WAIT))
    peak_mib = peak_rss_mib()
    log.info(
        "worker %s stopped (%d job(s) claimed, peak RSS %.0f MiB)",
        worker.owner,
        worker.claimed,
        peak_mib,
    )
    return worker


async def _start_endpoint(
    worker: JobLoop, listener: Listener | None, settings: Settings
) -> Endpoint | None:
    if settings.metrics_port is None:
        return None
    endpoint = Endpoint(worker, listener)
    await endpoint.start(settings.metrics_host, settings.metrics_port)
    return endpoint


async def _close_pool(pool: asyncpg.Pool, wait: float) -> None:
    """A job the shutdown stopped waiting for may still hold a connection for a statement
    the database is slow to answer: close what closes at once and cut the rest."""
    try:
        await asyncio.wait_for(pool.close(), wait)
    except TimeoutError:
        pool.terminate()


def _time_left(worker: JobLoop, at_most: float) -> float:
    """`at_most` seconds, or what is left of the shutdown grace if that is less."""
    left = worker.remaining_grace()
    return at_most if left is None else max(min(at_most, left), 0.01)


async def _bounded(task: asyncio.Task[None], timeout: float) -> None:
    """Until `task` ends, or `timeout`: then it is cancelled and left to finish alone."""
    await asyncio.wait([task], timeout=timeout)
    if not task.done():
        task.cancel()
        return
    if not task.cancelled() and task.exception() is not None:
        log.warning("listener ended with an error: %s", task.exception())


async def _stop_listener_on_stop(worker: JobLoop, listener: Listener) -> None:
    await worker.stopping.wait()
    await listener.stop()


def peak_rss_mib() -> float:
    """This process's own peak RSS. VmHWM belongs to the memory map that exec created;
    getrusage's ru_maxrss would also count the forked parent's pages before exec."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def _stop_on(stop: asyncio.Event, worker: JobLoop) -> None:
    await stop.wait()
    worker.request_stop()


async def _announce(worker: JobLoop, listener: Listener | None, concurrency: int) -> None:
    """One line when the worker can be woken and has caught up with what was already
    runnable; tests and operators wait for it."""
    if listener is not None:
        await listener.listening.wait()
        await worker.caught_up()
    mode = f"listening on {WAKEUP_CHANNEL}" if listener else "burst mode"
    log.info("worker %s ready: %s, concurrency %d", worker.owner, mode, concurrency)


def install_stop_signals(is_stopping: Callable[[], bool], request_stop: Callable[[], None]) -> None:
    """SIGTERM/SIGINT ask for a graceful stop; a second one exits at once. Shared by `run`,
    `scan` and `serve`."""
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if is_stopping():
            log.warning(
                "second %s: exiting now; leases expire and other workers re-claim",
                signal.Signals(signum).name,
            )
            os._exit(130)
        log.info("%s: stopping (send it again to exit at once)", signal.Signals(signum).name)
        request_stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)


def remove_stop_signals() -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.remove_signal_handler(sig)
