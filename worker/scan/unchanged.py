"""Telling an unchanged sitemap file without parsing it (issue 19).

A re-scan asks with the validators of the previous scan (If-None-Match, If-Modified-Since);
a 304 needs no body at all. A server that sends no validators, or ignores them, still
sends the same bytes for an unchanged file: BodyCheck hashes the body as it arrives and,
while `hold` is set, keeps it back from the parsing sink until the end, so that a body
whose hash matches is never parsed or stored. A body larger than `max_held` is let through
as it comes (hashed all the same), so memory stays bounded.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Mapping

from .fetch import Sink

MAX_HELD = 32 * 1024 * 1024  # bytes of one body kept back while its hash is unknown


def conditional_headers(etag: str | None, last_modified: str | None) -> Mapping[str, str]:
    """The request headers that let a server answer 304 for an unchanged file."""
    headers: dict[str, str] = {}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    return headers


class BodyCheck:
    """A sink in front of `sink`: hashes every chunk; with `hold`, keeps chunks back until
    release() (or until more than `max_held` bytes arrived)."""

    def __init__(self, sink: Sink, *, hold: bool, max_held: int = MAX_HELD) -> None:
        self._sink = sink
        self._hash = hashlib.sha256()
        self.holding = hold
        self._max_held = max_held
        self._held: list[bytes] = []
        self._held_bytes = 0

    @property
    def digest(self) -> str:
        return self._hash.hexdigest()

    async def __call__(self, chunk: bytes) -> bool | None:
        self._hash.update(chunk)
        if self.holding:
            self._held.append(chunk)
            self._held_bytes += len(chunk)
            if self._held_bytes <= self._max_held:
                return True
            return await self.release()
        return await _call(self._sink, chunk)

    async def release(self) -> bool:
        """Hand what was kept back to the sink, in order; False if it asked to stop."""
        self.holding = False
        held, self._held, self._held_bytes = self._held, [], 0
        for chunk in held:
            if await _call(self._sink, chunk) is False:
                return False
        return True

    def discard(self) -> None:
        """Drop what was kept back (the file is unchanged)."""
        self.holding = False
        self._held, self._held_bytes = [], 0


async def _call(sink: Sink, chunk: bytes) -> bool | None:
    out = sink(chunk)
    if inspect.isawaitable(out):
        out = await out
    return out
