"""A real HTTP server on 127.0.0.1 (ephemeral port) for fetch and scan tests.

Routes can be added before or after start (one catch-all aiohttp route
dispatches on the path), so a test builds exactly the site it needs:

    async with Site() as site:
        site.add("/robots.txt", "Sitemap: /sitemap.xml\\n")
        site.add("/sitemap.xml", body, gzip=True)
        site.redirect("/old", "/sitemap.xml", status=301)
        site.add_sequence("/flaky", [Reply(status=503), Reply(b"ok")])
        site.stream("/endless")                       # never ends
        site.stream("/drip", chunk=b"x", interval=0.05)  # slow drip
        ...site.url("/robots.txt"), site.hits["/sitemap.xml"], site.max_in_flight

Fault tests steer a client mid-request with events instead of sleeps:

        release = site.hold("/robots.txt")            # answer only once release.set()
        await site.arrival("/robots.txt").wait()      # a request for it has arrived
        site.add_split("/big.xml", body, at=4096)     # first 4 KiB now, the rest on release

The server's own delays are real sleeps; tests themselves never sleep.
"""

from __future__ import annotations

import asyncio
import gzip as gzip_module
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Self

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Reply:
    """One canned response. `delay` is slept before answering; `gzip` compresses the body
    and sends Content-Encoding: gzip (for a .gz *file*, pass compressed bytes instead)."""

    body: bytes | str = b""
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0
    gzip: bool = False
    content_type: str | None = None


@dataclass(frozen=True)
class Seen:
    """A request as the server saw it."""

    path: str  # path and query
    headers: Mapping[str, str]
    at: float  # time.monotonic() on arrival


def free_port() -> int:
    """A port nothing listens on (bound then released): for connection-refused tests."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Site:
    """A test website; an async context manager that always shuts the server down."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = 0
        self.hits: Counter[str] = Counter()
        self.requests: list[Seen] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._routes: dict[str, Handler] = {}
        self._arrivals: dict[str, asyncio.Event] = {}
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        # A short shutdown grace: a handler still sleeping for a client that gave up
        # is cancelled instead of holding the test for the default 60 s.
        self._runner = web.AppRunner(
            app, access_log=None, shutdown_timeout=0.5, handler_cancellation=True
        )
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, 0).start()
        self.port = int(self._runner.addresses[0][1])

    async def close(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    @property
    def origin(self) -> str:
        return f"http://{self.host}:{self.port}"

    def url(self, path: str = "/") -> str:
        return self.origin + path

    # Routes ---------------------------------------------------------------------------

    def add_handler(self, path: str, handler: Handler) -> None:
        """Serve `path` (optionally with its query) with any aiohttp handler."""
        self._routes[path] = handler

    def add(
        self,
        path: str,
        body: bytes | str = b"",
        *,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
        delay: float = 0.0,
        gzip: bool = False,
        content_type: str | None = None,
    ) -> None:
        """Serve the same static response on every request."""
        self.add_sequence(path, [Reply(body, status, headers or {}, delay, gzip, content_type)])

    def add_sequence(self, path: str, replies: Iterable[Reply]) -> None:
        """Serve the replies in order, one per request; the last repeats."""
        queue = list(replies)
        if not queue:
            raise ValueError("add_sequence needs at least one reply")

        async def handler(request: web.Request) -> web.StreamResponse:
            reply = queue.pop(0) if len(queue) > 1 else queue[0]
            return await _respond(reply)

        self.add_handler(path, handler)

    def redirect(self, path: str, location: str, status: int = 302) -> None:
        """Answer `path` with a redirect; `location` is sent as given (relative is fine)."""
        self.add(path, status=status, headers={"Location": location})

    def stream(
        self,
        path: str,
        chunk: bytes = b"x" * 65536,
        *,
        interval: float = 0.0,
        count: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """A chunked body of `count` chunks (None: endless), `interval` seconds apart."""

        async def handler(request: web.Request) -> web.StreamResponse:
            resp = web.StreamResponse(headers=headers)
            resp.content_type = "application/xml"
            await resp.prepare(request)
            sent = 0
            try:
                while count is None or sent < count:
                    await resp.write(chunk)
                    sent += 1
                    if interval:
                        await asyncio.sleep(interval)
                await resp.write_eof()
            except ConnectionError:
                pass  # the client hung up: expected for endless bodies
            return resp

        self.add_handler(path, handler)

    # Held responses and arrival events (fault tests) ------------------------------------

    def arrival(self, path: str) -> asyncio.Event:
        """An event set once a request for `path` (as routed: path, or path with query)
        has arrived; it stays set. The same event comes back for the same path."""
        event = self._arrivals.get(path)
        if event is None:
            event = self._arrivals[path] = asyncio.Event()
            if self.hits[path]:
                event.set()
        return event

    def hold(self, path: str, release: asyncio.Event | None = None) -> asyncio.Event:
        """Hold every response of `path` (its current handler, so add the route first;
        none: a 404) until `release` is set, then answer normally; requests after that
        are not held. Returns the release event. A client that hangs up meanwhile
        cancels its held handler (the server cancels handlers of lost connections)."""
        gate = release if release is not None else asyncio.Event()
        inner = self._routes.get(path)

        async def handler(request: web.Request) -> web.StreamResponse:
            await gate.wait()
            if inner is None:
                return web.Response(status=404, text="not found")
            return await inner(request)

        self.add_handler(path, handler)
        return gate

    def add_split(
        self,
        path: str,
        body: bytes | str,
        *,
        at: int,
        release: asyncio.Event | None = None,
        content_type: str = "application/xml",
    ) -> asyncio.Event:
        """Serve `body` in two parts: `body[:at]` at once (chunked, flushed), the rest
        only once `release` is set; so a client is caught mid-file. Returns the release
        event; once set, later requests get the whole body without a pause."""
        data = body.encode() if isinstance(body, str) else body
        gate = release if release is not None else asyncio.Event()

        async def handler(request: web.Request) -> web.StreamResponse:
            resp = web.StreamResponse()
            resp.content_type = content_type
            await resp.prepare(request)
            try:
                await resp.write(data[:at])
                await gate.wait()
                await resp.write(data[at:])
                await resp.write_eof()
            except ConnectionError:
                pass  # the client went away while held (killed): nothing more to send
            return resp

        self.add_handler(path, handler)
        return gate

    # Dispatch -------------------------------------------------------------------------

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        key = request.path_qs if request.path_qs in self._routes else request.path
        self.hits[key] += 1
        self.requests.append(Seen(request.path_qs, dict(request.headers), time.monotonic()))
        for name in {key, request.path}:
            event = self._arrivals.get(name)
            if event is not None:
                event.set()
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            handler = self._routes.get(key)
            if handler is None:
                return web.Response(status=404, text="not found")
            return await handler(request)
        finally:
            self.in_flight -= 1


async def _respond(reply: Reply) -> web.Response:
    if reply.delay:
        await asyncio.sleep(reply.delay)
    body = reply.body.encode() if isinstance(reply.body, str) else reply.body
    headers = dict(reply.headers)
    if reply.gzip:
        body = gzip_module.compress(body)
        headers["Content-Encoding"] = "gzip"
    resp = web.Response(body=body, status=reply.status, headers=headers)
    if reply.content_type:
        resp.content_type = reply.content_type
    return resp


class RawSite:
    """A bare TCP server on 127.0.0.1 that answers each request path with bytes exactly as
    given: for what an HTTP library refuses to send (non-UTF-8 header bytes, a body shorter
    than its Content-Length, a connection dropped mid-body). One response per connection.

        async with RawSite() as raw:
            raw.add("/sitemap.xml", response(200, body, headers=[(b"ETag", b'"\\xff"')]))
            raw.add("/cut.xml", response(200, body, length=len(body) + 100))  # then hang up

    Unknown paths get a 404. `hits` counts requests by path as sent (raw, not decoded)."""

    def __init__(self) -> None:
        self.port = 0
        self.hits: Counter[str] = Counter()
        self.connections = 0
        self._routes: dict[str, bytes] = {}
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            server, self._server = self._server, None
            server.close()
            await server.wait_closed()

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str = "/") -> str:
        return self.origin + path

    def add(self, path: str, raw: bytes) -> None:
        """Answer `path` (raw request target, query included) with `raw`, then hang up."""
        self._routes[path] = raw

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            target = head.split(b" ", 2)[1].decode("latin-1")
            self.hits[target] += 1
            writer.write(self._routes.get(target, response(404, b"not found")))
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, IndexError):
            pass  # the client went away, or sent nothing usable
        finally:
            writer.close()


def response(
    status: int,
    body: bytes = b"",
    *,
    headers: Iterable[tuple[bytes, bytes]] = (),
    length: int | None = None,
    content_type: bytes = b"application/xml",
) -> bytes:
    """A raw HTTP/1.1 response that closes its connection. `length` overrides the
    Content-Length header (a larger one makes a body cut short when the server hangs up)."""
    lines = [
        b"HTTP/1.1 %d X" % status,
        b"Content-Type: " + content_type,
        b"Content-Length: %d" % (len(body) if length is None else length),
        b"Connection: close",
    ]
    lines += [name + b": " + value for name, value in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body
