"""The one direct LISTEN connection, supervised.

Its callback only sets the worker's wake-up event. On loss it reconnects with backoff and
jitter, re-LISTENs and asks for a catch-up claim (notifications sent while it was away are
lost by design). When idle it proves the connection with a NOTIFY round trip, which catches
half-open sockets that never report an error. One log line per state change, no storm.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

import asyncpg

from . import connections
from .errors import CONNECTION_ERRORS, describe
from .settings import Settings

log = logging.getLogger(__name__)

WAKEUP_CHANNEL = "sitemap_worker_wakeup"
PROBE_CHANNEL = "sitemap_worker_probe"
LOUD_AFTER_ATTEMPTS = 5
LISTENER_APPLICATION_NAME = "sitemap-worker-listener"  # tells it apart in pg_stat_activity


class ListenerLost(Exception):
    """The connection closed, or a probe went unanswered."""


class ListenerStopped(Exception):
    """A stop cut short a connect or a watch."""


class Listener:
    """States: connecting -> listening -> reconnecting -> listening ... -> stopped. After
    LOUD_AFTER_ATTEMPTS failed reconnects the state is `failing` and an error is logged once;
    the worker keeps polling meanwhile."""

    def __init__(
        self,
        dsn: str,
        settings: Settings,
        on_notify: Callable[[], None],
        on_connect: Callable[[], None],
    ) -> None:
        self._dsn = dsn
        self._settings = settings
        self._on_notify = on_notify
        self._on_connect = on_connect
        self._token = uuid.uuid4().hex
        self._probe_answered = asyncio.Event()
        self._lost = asyncio.Event()
        self._last_heard = time.monotonic()
        self._stopped = asyncio.Event()
        self._conn: asyncpg.Connection | None = None
        self.state = "connecting"
        self.reconnects = 0
        self.listening = asyncio.Event()

    # -- callbacks: keep them trivial -------------------------------------------------------

    def _notification(self, _conn: object, _pid: int, channel: str, payload: str) -> None:
        self._last_heard = time.monotonic()
        if channel == PROBE_CHANNEL:
            if payload == self._token:
                self._probe_answered.set()
        else:
            self._on_notify()

    def _terminated(self, _conn: object) -> None:
        self._lost.set()

    # -- supervision ----------------------------------------------------------------------

    async def run(self) -> None:
        failures = 0
        down_since: float | None = None
        while not self._stopped.is_set():
            try:
                await self._unless_stopped(self._connect())
                if down_since is not None:
                    self.reconnects += 1
                    log.warning("listener reconnected after %.1f s", time.monotonic() - down_since)
                self._set_state("listening")
                failures, down_since = 0, None
                self._on_connect()  # catch-up claim for what was missed
                await self._unless_stopped(self._watch())
            except Exception as exc:  # supervised: whatever broke, connect again
                if self._stopped.is_set():
                    break
                failures += 1
                if down_since is None:
                    down_since = time.monotonic()
                    self._set_state("reconnecting")
                    expected = isinstance(
                        exc, (ListenerLost, asyncpg.PostgresError, *CONNECTION_ERRORS)
                    )
                    log.warning(
                        "listener lost: %s; reconnecting (polling meanwhile)",
                        describe(exc),
                        exc_info=not expected,
                    )
                elif failures == LOUD_AFTER_ATTEMPTS:
                    self._set_state("failing")
                    log.error(
                        "listener cannot reconnect after %d attempts (%s); jobs are still "
                        "claimed by polling every %.1f s",
                        failures,
                        describe(exc),
                        self._settings.poll_interval.total_seconds(),
                    )
            finally:
                await self._close()
            if not self._stopped.is_set():
                await self._pause(failures)
        self._set_state("stopped")

    async def stop(self) -> None:
        """Cuts short whatever the listener is waiting on (a connect can take 10 s, a probe
        5 s): a stopping worker has no use for wake-ups."""
        self._stopped.set()
        self._lost.set()

    async def _unless_stopped(self, work: Coroutine[Any, Any, None]) -> None:
        """`work`, cancelled by a stop: then ListenerStopped."""
        task = asyncio.ensure_future(work)
        stopped = asyncio.ensure_future(self._stopped.wait())
        try:
            await asyncio.wait([task, stopped], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
            if not task.done():
                task.cancel()
                await asyncio.wait([task])  # a connect or a probe ends at once when cancelled
        if task.cancelled():
            raise ListenerStopped("listener stopped")
        task.result()

    def _set_state(self, state: str) -> None:
        self.state = state
        if state == "listening":
            self.listening.set()
        else:
            self.listening.clear()

    async def _connect(self) -> None:
        self._lost.clear()
        conn = await connections.connect(
            self._dsn,
            self._settings,
            timeout=10,
            server_settings={"application_name": LISTENER_APPLICATION_NAME},
        )
        self._conn = conn
        conn.add_termination_listener(self._terminated)
        await conn.add_listener(WAKEUP_CHANNEL, self._notification)
        await conn.add_listener(PROBE_CHANNEL, self._notification)
        self._last_heard = time.monotonic()

    async def _watch(self) -> None:
        """Until the connection is lost or a probe fails."""
        interval = self._settings.listener_probe_interval.total_seconds()
        while not self._stopped.is_set():
            idle_for = time.monotonic() - self._last_heard
            try:
                async with asyncio.timeout(max(interval - idle_for, 0.01)):
                    await self._lost.wait()
            except TimeoutError:
                if time.monotonic() - self._last_heard >= interval:
                    await self._probe()
                continue
            if not self._stopped.is_set():
                raise ListenerLost("connection closed")

    async def _probe(self) -> None:
        assert self._conn is not None
        self._probe_answered.clear()
        timeout = self._settings.listener_probe_timeout.total_seconds()
        try:
            async with asyncio.timeout(timeout):
                await self._conn.execute(f"NOTIFY {PROBE_CHANNEL}, '{self._token}'")
                await self._probe_answered.wait()
        except TimeoutError:
            raise ListenerLost(f"no answer to a NOTIFY probe within {timeout:.0f} s") from None

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:  # a stopping worker does not wait long for a goodbye
            async with asyncio.timeout(0.2 if self._stopped.is_set() else 2):
                await conn.close()
        except Exception:
            conn.terminate()

    async def _pause(self, failures: int) -> None:
        """Exponential backoff with full jitter, capped; a stop cuts it short."""
        cap = self._settings.listener_max_backoff.total_seconds()
        delay = random.uniform(0, min(cap, 0.1 * 2 ** min(failures, 10)))
        try:
            async with asyncio.timeout(delay):
                await self._stopped.wait()
        except TimeoutError:
            pass
