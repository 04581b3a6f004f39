"""A sitemap site on 127.0.0.1 that answers conditional requests, for re-scan tests and the
re-scan benchmark.

`validators="proper"`: each file has an ETag (a hash of its body) and a Last-Modified (when
it was last set), and a request with a matching If-None-Match, or an If-Modified-Since not
older than the file (without If-None-Match), gets a 304 with no body.
`validators="ignored"`: the same headers are sent, but every request gets the whole body.
`validators="none"`: neither header is sent; every request gets the whole body.
`answers` counts each path's 200s and 304s.
"""

from __future__ import annotations

import hashlib
import socket
from collections import Counter
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from typing import Literal, Self

from aiohttp import web

Validators = Literal["proper", "ignored", "none"]


class ConditionalSite:
    def __init__(self, validators: Validators = "proper") -> None:
        self.validators = validators
        self.files: dict[str, tuple[bytes, datetime]] = {}
        self.answers: Counter[tuple[str, int]] = Counter()
        self._clock = datetime(2026, 1, 1, tzinfo=UTC)
        self._runner: web.AppRunner | None = None
        self.port = 0

    def set(self, path: str, body: bytes | str) -> None:
        """Add or change a file; a changed body gets a later Last-Modified."""
        data = body.encode() if isinstance(body, str) else body
        old = self.files.get(path)
        if old is not None and old[0] == data:
            return
        self._clock += timedelta(seconds=10)
        self.files[path] = (data, self._clock)

    def count(self, status: int) -> int:
        return sum(n for (_, s), n in self.answers.items() if s == status)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if path not in self.files:
            self.answers[(path, 404)] += 1
            return web.Response(status=404)
        body, modified = self.files[path]
        headers: dict[str, str] = {}
        if self.validators != "none":
            headers["ETag"] = '"' + hashlib.sha1(body).hexdigest() + '"'
            headers["Last-Modified"] = format_datetime(modified, usegmt=True)
        if self.validators == "proper" and _not_modified(request, headers, modified):
            self.answers[(path, 304)] += 1
            return web.Response(status=304, headers=headers)
        self.answers[(path, 200)] += 1
        return web.Response(body=body, headers=headers, content_type="application/xml")


def _not_modified(request: web.Request, headers: dict[str, str], modified: datetime) -> bool:
    if_none_match = request.headers.get("If-None-Match")
    if if_none_match is not None:  # RFC 9110: If-Modified-Since is then ignored
        return headers["ETag"] in [tag.strip() for tag in if_none_match.split(",")]
    since = request.headers.get("If-Modified-Since")
    if since is None:
        return False
    try:
        return modified <= parsedate_to_datetime(since)
    except (TypeError, ValueError):
        return False
