"""HTTP for scans: one aiohttp session per worker, bodies streamed into the caller's sink.

Sitemap servers misbehave (sitemaps.md §4-5): endless or slow-drip bodies, redirect
loops, spurious 429/5xx, redirects to internal hosts. So: a byte cap and a deadline per
attempt that trickling bytes cannot extend; redirects followed by hand so every hop
passes the SSRF guard; retries only while nothing has reached the sink (a parser fed
twice would see the document twice); failures about the target returned, never raised.
"""

from __future__ import annotations

import asyncio
import email.utils
import inspect
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, Self

import aiohttp
import tenacity
from yarl import URL

from worker.scan.clean import retry_delay, storable
from worker.scan.netguard import ForbiddenAddress, GuardedResolver, NetGuard

log = logging.getLogger(__name__)

KiB = 1024
MiB = 1024 * KiB
REDIRECT_STATUSES = frozenset((301, 302, 303, 307, 308))
_NO_SUCH_NAME = (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME))

# The sink gets each body chunk; returning False (or an awaitable of False) stops the
# download early without an error (e.g. the parser has all the URLs it will take).
Sink = Callable[[bytes], Awaitable[bool | None] | bool | None]
_DEADLINE: ContextVar[asyncio.Timeout | None] = ContextVar("fetch_deadline", default=None)


@asynccontextmanager
async def deadline_paused() -> AsyncIterator[None]:
    """For a sink that must wait on its own consumer (back-pressure from a slow database):
    the running attempt's total_timeout stands still inside the block and resumes with the
    time it had left. That wait is not the server being slow, and must not read as "timed
    out". Outside a fetch, or before the deadline started, it does nothing."""
    deadline = _DEADLINE.get()
    when = deadline.when() if deadline is not None else None
    if deadline is None or when is None:
        yield
        return
    loop = asyncio.get_running_loop()
    left = when - loop.time()
    deadline.reschedule(None)
    try:
        yield
    finally:
        if not deadline.expired():
            deadline.reschedule(loop.time() + left)


@dataclass(frozen=True, slots=True)
class FetchLimits:
    """Every fetch knob with its default. Durations in seconds. The worker builds one from
    its Settings (from_settings: the same names with a `fetch_` prefix, allow_private_networks
    as is); the library reads no settings of its own. The defaults equal Settings' (a unit
    test holds them together)."""

    connect_timeout: float = 10.0
    read_timeout: float = 20.0  # longest silence while waiting for bytes
    # One attempt, all hops, the whole body; not the time a sink spends in deadline_paused().
    total_timeout: float = 60.0
    user_agent: str = "sitemap-worker/0.1 (+https://github.com/sitemap-worker)"
    per_host_concurrency: int = 4
    per_host_delay: float = 0.0  # minimum gap between requests to a host
    max_bytes: int = 51 * MiB  # bytes on the wire: the spec's 50 MB plus a margin
    robots_max_bytes: int = 512 * KiB  # fetch_bytes() default; Google reads 500 KiB
    max_redirects: int = 10
    max_attempts: int = 3
    retry_base: float = 1.0  # first backoff; doubles per attempt, +-10% jitter
    max_retry_wait: float = 60.0  # cap on backoff and on an honoured Retry-After
    chunk_size: int = 64 * KiB
    allow_private_networks: bool = False

    @classmethod
    def from_settings(cls, settings: Any) -> FetchLimits:
        """Read `fetch_*` fields from Settings where they exist; defaults otherwise."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            name = f.name if f.name == "allow_private_networks" else f"fetch_{f.name}"
            value = getattr(settings, name, f.default)
            values[f.name] = value.total_seconds() if isinstance(value, timedelta) else value
        return cls(**values)


class Redirect(NamedTuple):
    status: int
    url: str  # the URL that answered with the redirect
    location: str  # where it pointed, resolved


@dataclass(slots=True)
class FetchResult:
    """What happened to one fetch. `error` is None on success; `transient` says a later
    try may succeed (timeouts, 429, 5xx); `truncated` says the sink got part of a body."""

    url: str
    final_url: str
    status: int | None = None
    content_type: str | None = None
    etag: str | None = None
    last_modified: str | None = None
    content_encoding: str | None = None
    bytes_read: int = 0
    redirects: list[Redirect] = field(default_factory=list)
    elapsed: float = 0.0
    attempts: int = 0
    error: str | None = None
    transient: bool = False
    truncated: bool = False
    capped: bool = False  # the download cap cut the body (`truncated` too)
    stopped: bool = False  # the sink asked to stop
    # No answer at all: the name did not resolve, the connection was refused or timed out,
    # TLS failed, or the guard refused the address. Asking the host for more is pointless.
    unreachable: bool = False
    retry_after: float | None = None  # seconds the server asked us to wait (429/503)

    @property
    def ok(self) -> bool:
        return self.error is None


class _Retry(Exception):
    """A transient failure before any byte reached the sink (args[0]: its FetchResult):
    tenacity may try again."""


class _SinkError(Exception):
    """The sink raised (its exception is the cause): a caller bug, re-raised as is rather
    than reported as a fetch error."""


MAX_RETRY_AFTER = 366 * 86400  # a bigger delta says "not soon" just as well, and stays a float


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """Retry-After as seconds: delta-seconds (ASCII digits only: str.isdigit() also takes
    "²" and other scripts' digits, which float() refuses) or an HTTP-date; None if absent
    or garbage."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(min(int(value), MAX_RETRY_AFTER))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


class _Call(NamedTuple):  # one fetch() call's arguments, as passed to each attempt
    url: str
    sink: Sink
    cap: int
    headers: Mapping[str, str] | None
    retry_unreachable: bool


@dataclass(slots=True)
class _HostGate:
    """Per-host concurrency slots and politeness spacing."""

    slots: asyncio.Semaphore
    users: int = 0  # holding or waiting for a slot
    next_start: float = 0.0  # monotonic time the next request may start


class Fetcher:
    """One per worker: owns the aiohttp session (created on first use) and the host gates.

    async with Fetcher(FetchLimits.from_settings(settings)) as fetcher:
        result = await fetcher.fetch(url, parser_sink)
    """

    def __init__(
        self,
        limits: FetchLimits | None = None,
        *,
        guard: NetGuard | None = None,
        on_fetch: Callable[[FetchResult], None] | None = None,
    ) -> None:
        self.limits = limits or FetchLimits()
        self._on_fetch = on_fetch  # metrics: one call per fetch, after its last attempt
        self.guard = guard or NetGuard(allow_private=self.limits.allow_private_networks)
        self._session: aiohttp.ClientSession | None = None
        self._resolver: GuardedResolver | None = None
        self._hosts: dict[str, _HostGate] = {}
        self._closed = False

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the session and its connections; the fetcher cannot be used afterwards."""
        self._closed = True
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()
        if self._resolver is not None:  # a resolver passed in is not closed by the connector
            resolver, self._resolver = self._resolver, None
            await resolver.close()

    def _get_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("Fetcher is closed")
        if self._session is None:
            lim = self.limits
            self._resolver = GuardedResolver(self.guard)
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(resolver=self._resolver, limit=100),
                # No sock_read: aiohttp's read timer can run while the body waits unread in
                # its buffer (a sink held by a slow database; seen on aiohttp 3.10), so the
                # silence limit is ours, counted only while we wait for bytes (_quiet).
                timeout=aiohttp.ClientTimeout(sock_connect=lim.connect_timeout, sock_read=None),
                headers={"User-Agent": lim.user_agent, "Accept-Encoding": "gzip"},
                auto_decompress=False,  # the parser finds gzip by magic bytes, layers and all
                cookie_jar=aiohttp.DummyCookieJar(),  # no state leaking between sites/jobs
                trust_env=False,  # a proxy from the environment would bypass the guard
            )
        return self._session

    async def fetch(
        self,
        url: str,
        sink: Sink,
        *,
        max_bytes: int | None = None,
        headers: Mapping[str, str] | None = None,
        retry_unreachable: bool = True,
    ) -> FetchResult:
        """GET `url`, following redirects, streaming a 2xx body into `sink`. With
        `retry_unreachable=False` a host that cannot be reached at all (see
        FetchResult.unreachable) is not tried again: the caller gives up on it."""
        session = self._get_session()
        cap = max_bytes if max_bytes is not None else self.limits.max_bytes
        call = _Call(url, sink, cap, headers, retry_unreachable)
        started = time.monotonic()
        retrying = tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(self.limits.max_attempts),
            wait=self._wait,
            retry=tenacity.retry_if_exception_type(_Retry),
            before_sleep=tenacity.before_sleep_log(log, logging.DEBUG),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    result = await self._attempt(session, call)
        except _Retry as exc:
            result = exc.args[0]
        result.attempts = retrying.statistics["attempt_number"]
        result.elapsed = time.monotonic() - started
        if self._on_fetch is not None:
            self._on_fetch(result)
        return result

    async def fetch_bytes(
        self,
        url: str,
        limit: int | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        retry_unreachable: bool = True,
    ) -> tuple[FetchResult, bytes]:
        """Small documents (robots.txt) in memory; over `limit` the first `limit` bytes
        come back with `truncated` set."""
        buf = bytearray()
        cap = limit if limit is not None else self.limits.robots_max_bytes
        result = await self.fetch(
            url, buf.extend, max_bytes=cap, headers=headers, retry_unreachable=retry_unreachable
        )
        return result, bytes(buf)

    def _wait(self, state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, _Retry) and exc.args[0].retry_after is not None:
            return float(exc.args[0].retry_after)
        return retry_delay(state.attempt_number, self.limits.retry_base, self.limits.max_retry_wait)

    async def _attempt(self, session: aiohttp.ClientSession, call: _Call) -> FetchResult:
        result = FetchResult(url=call.url, final_url=call.url)
        # No deadline while queued for the host's slot; it starts with the first request.
        deadline = asyncio.timeout(None)
        token = _DEADLINE.set(deadline)  # for deadline_paused() in the sink
        try:
            async with deadline:
                await self._follow(session, call, result, deadline)
        except _SinkError as exc:
            raise exc.__cause__ from None  # type: ignore[misc]
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            result.error, result.transient = self._describe(exc, deadline.expired())
            result.truncated = result.truncated or result.bytes_read > 0
            result.unreachable = (
                result.status is None
                and not deadline.expired()
                and isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError)
            )
        finally:
            _DEADLINE.reset(token)
        may_wait = (result.retry_after or 0) <= self.limits.max_retry_wait
        may_retry = call.retry_unreachable or not result.unreachable
        if result.transient and result.bytes_read == 0 and may_wait and may_retry:
            raise _Retry(result)
        return result

    async def _follow(
        self,
        session: aiohttp.ClientSession,
        call: _Call,
        result: FetchResult,
        deadline: asyncio.Timeout,
    ) -> None:
        """Request hop after hop; on the final response, stream the body or record the failure."""
        url: URL | None = URL(call.url).with_fragment(None)
        seen: set[str] = set()
        while url is not None and self._admit(url, result, seen):
            async with self._host_slot(url.host or ""):
                if deadline.when() is None:
                    deadline.reschedule(
                        asyncio.get_running_loop().time() + self.limits.total_timeout
                    )
                request = session.get(url, allow_redirects=False, headers=call.headers)
                async with AsyncExitStack() as response:
                    async with self._quiet():
                        resp = await response.enter_async_context(request)
                    result.status = resp.status
                    if resp.status in REDIRECT_STATUSES:
                        url = self._next_hop(resp, url, result)
                        continue
                    _take_headers(result, resp)
                    if resp.status == 304 or 200 <= resp.status < 300:
                        await self._stream(resp, result, call.sink, call.cap)
                        return
                    result.error = f"HTTP {resp.status}"
                    result.transient = resp.status in (408, 429) or resp.status >= 500
                    result.retry_after = retry_after_seconds(resp.headers.get("Retry-After"))
                    if result.retry_after is not None:
                        result.error += f" (Retry-After {result.retry_after:g} s)"
                    return

    def _admit(self, url: URL, result: FetchResult, seen: set[str]) -> bool:
        """Check a hop before requesting it: URL shape, SSRF guard for IP literals, loops."""
        key = result.final_url = str(url)
        result.error = self._check_url(url, redirected=bool(result.redirects))
        if result.error is None:  # an IP literal the guard refuses: nothing was asked
            result.error = self.guard.check_host(url.host or "")
            result.unreachable = result.error is not None and result.status is None
        if result.error is None and key in seen:
            result.error = "redirect loop"
        seen.add(key)
        return result.error is None

    def _next_hop(self, resp: aiohttp.ClientResponse, url: URL, result: FetchResult) -> URL | None:
        """The redirect target (relative Location resolved), or None with `error` set."""
        location = _location(resp.headers.get("Location", ""))
        try:
            target = url.join(URL(location)).with_fragment(None) if location else None
        except ValueError:
            target = None
        if target is None:
            result.error = (
                f"HTTP {resp.status} with a missing or invalid Location {location[:200]!r}"
            )
            return None
        result.redirects.append(Redirect(resp.status, str(url), str(target)))
        if len(result.redirects) > self.limits.max_redirects:
            result.error = f"too many redirects ({len(result.redirects)})"
            return None
        return target

    def _check_url(self, url: URL, redirected: bool) -> str | None:
        where = "redirect to " if redirected else ""
        if not url.scheme:
            return f"{where}not an absolute URL: {str(url)[:200]!r}"
        if url.scheme not in ("http", "https"):
            return f"{where}unsupported scheme {url.scheme!r}: only http and https"
        if not url.host:
            return f"{where}URL without a host: {url}"
        if url.user is not None or url.password is not None:
            return f"{where}URL with credentials refused"
        return None

    async def _stream(
        self, resp: aiohttp.ClientResponse, result: FetchResult, sink: Sink, cap: int
    ) -> None:
        """Copy the body into the sink in chunks, stopping at `cap` bytes."""
        while True:
            async with self._quiet():
                chunk = await resp.content.read(self.limits.chunk_size)
            if not chunk:
                return
            over = len(chunk) > cap - result.bytes_read
            chunk = chunk[: cap - result.bytes_read]
            result.bytes_read += len(chunk)
            if chunk and await _deliver(sink, chunk) is False:
                result.stopped = True
            elif over:
                result.error, result.truncated = f"download cap of {cap:,} bytes reached", True
                result.capped = True
            else:
                continue
            resp.close()  # drop the connection rather than drain the rest
            return

    @asynccontextmanager
    async def _quiet(self) -> AsyncIterator[None]:
        """The read limit: at most `read_timeout` seconds waiting for the server's next bytes
        (the response head, or the next piece of body). Only that wait counts: time the
        sink spends, or data lying unread in the buffer, is not the server being silent."""
        silence = asyncio.timeout(self.limits.read_timeout)
        try:
            async with silence:
                yield
        except TimeoutError as exc:
            if silence.expired():
                raise aiohttp.ServerTimeoutError(
                    f"no data for {self.limits.read_timeout:g} s"
                ) from exc
            raise

    @asynccontextmanager
    async def _host_slot(self, host: str) -> AsyncIterator[None]:
        """Hold one of the host's slots; space request starts by per_host_delay."""
        gate = self._hosts.get(host)
        if gate is None:
            gate = self._hosts[host] = _HostGate(
                asyncio.Semaphore(self.limits.per_host_concurrency)
            )
        gate.users += 1
        try:
            async with gate.slots:
                if self.limits.per_host_delay > 0:
                    now = time.monotonic()
                    start = max(now, gate.next_start)
                    gate.next_start = start + self.limits.per_host_delay
                    if start > now:
                        await asyncio.sleep(start - now)
                yield
        finally:
            gate.users -= 1
            if gate.users == 0 and time.monotonic() >= gate.next_start:
                del self._hosts[host]  # bounded map over a long-lived worker

    def _describe(self, exc: BaseException, expired: bool) -> tuple[str, bool]:
        """(readable error, transient) for an exception about the target."""
        if expired:
            return f"timed out after {self.limits.total_timeout:g} s", True
        if isinstance(exc, aiohttp.ConnectionTimeoutError):
            return f"connect timed out after {self.limits.connect_timeout:g} s", True
        if isinstance(exc, aiohttp.ServerTimeoutError):
            return f"no data for {self.limits.read_timeout:g} s", True
        if isinstance(exc, aiohttp.ClientSSLError):  # certificate and handshake errors
            detail = getattr(exc, "certificate_error", None) or exc.strerror or exc.os_error
            return f"TLS error with {exc.host}: {detail}", False
        if isinstance(exc, aiohttp.ClientConnectorDNSError):
            if isinstance(exc.os_error, ForbiddenAddress):
                return str(exc.os_error), False
            unknown = exc.os_error.errno in _NO_SUCH_NAME  # NXDOMAIN: retrying won't help
            return f"DNS lookup failed for {exc.host}: {exc.strerror or exc.os_error}", not unknown
        if isinstance(exc, aiohttp.ClientConnectorError):
            return f"cannot connect to {exc.host}:{exc.port}: {exc.strerror or exc.os_error}", True
        if isinstance(exc, aiohttp.ServerDisconnectedError):
            return "server closed the connection", True
        if isinstance(exc, aiohttp.ClientPayloadError):
            # aiohttp documents three causes; its wording changes between releases
            return "broken response body: cut short, or a bad chunked or compressed encoding", True
        if isinstance(exc, aiohttp.InvalidURL | ValueError):
            return f"invalid URL: {exc}", False
        if isinstance(exc, aiohttp.ClientResponseError):
            return f"bad HTTP response: {exc.message}", True
        if isinstance(exc, TimeoutError):
            return "timed out", True
        return f"{type(exc).__name__}: {exc}", True


def _take_headers(result: FetchResult, resp: aiohttp.ClientResponse) -> None:
    """The headers a file row keeps, as text PostgreSQL can store (see storable())."""
    h = resp.headers
    result.content_type, result.etag = _header(h, "Content-Type"), _header(h, "ETag")
    result.last_modified = _header(h, "Last-Modified")
    result.content_encoding = _header(h, "Content-Encoding")


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    return None if value is None else storable(value)


def _location(value: str) -> str:
    """A Location header as URL text with every byte kept. aiohttp decodes header bytes that
    are not UTF-8 to surrogates U+DC80..U+DCFF (one per byte); each goes back as its byte,
    percent-encoded, as browsers send it. Valid UTF-8 stays text: yarl encodes it (and
    IDNA-encodes a host)."""
    if value.isascii():
        return value
    return "".join(f"%{ord(c) - 0xDC00:02X}" if "\udc80" <= c <= "\udcff" else c for c in value)


async def _deliver(sink: Sink, chunk: bytes) -> bool | None:
    try:
        out = sink(chunk)
        if inspect.isawaitable(out):
            out = await out
    except Exception as exc:
        raise _SinkError() from exc
    return out
