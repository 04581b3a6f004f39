"""Incremental gunzip with bounded output, for gzip found by magic bytes."""

from __future__ import annotations

import zlib
from collections.abc import Iterator

GZIP_MAGIC = b"\x1f\x8b"
INFLATE_STEP = 64 * 1024  # max bytes produced per zlib call: bounds memory per step


class Gunzip:
    """One gzip layer, inflated incrementally with bounded output per step.

    The header is parsed here and the body inflated as raw deflate, so the
    CRC is not checked: a bad CRC keeps everything decoded (as Scrapy does),
    and the XML/text layer validates the content anyway. Concatenated members
    are followed; trailing junk after the last member (wpull#484: a cache
    plugin appending an HTML comment) is ignored.
    """

    def __init__(self) -> None:
        self._state = "header"  # header | body | trailer | junk | failed
        self._buf = b""
        self._z: zlib._Decompress | None = None
        self.produced = 0
        self.error: str | None = None
        self._members = 0

    def inflate(self, data: bytes) -> Iterator[bytes]:
        while data and self._state != "failed":
            if self._state == "body":
                yield from self._body(data)
                data = b""
                if self._state == "trailer":
                    data, self._buf = self._buf, b""
            elif self._state == "header":
                buf = self._buf + data
                size = _gzip_header_size(buf)
                if size is None:
                    self._buf = buf
                    if len(buf) > 65536:
                        self._fail("gzip header too long")
                    return
                if size < 0:
                    if self._members:  # junk after a complete member
                        self._state, self._buf = "junk", b""
                        return
                    self._fail("not a valid gzip header")
                    return
                self._buf, data = b"", buf[size:]
                self._z = zlib.decompressobj(-zlib.MAX_WBITS)
                self._state = "body"
            elif self._state == "trailer":
                buf = self._buf + data
                if len(buf) < 10:  # 8-byte trailer + 2 bytes to look for another member
                    self._buf = buf
                    return
                self._members += 1
                data = buf[8:]
                self._buf = b""
                self._state = "header" if data.startswith(GZIP_MAGIC) else "junk"
            else:  # junk
                return

    def _body(self, data: bytes) -> Iterator[bytes]:
        z = self._z
        assert z is not None
        while True:
            try:
                piece = z.decompress(data, INFLATE_STEP)
            except zlib.error as exc:
                self._fail(f"corrupt gzip data ({exc})")
                return
            if piece:
                self.produced += len(piece)
                yield piece
            data = z.unconsumed_tail
            if z.eof:
                self._state, self._buf = "trailer", z.unused_data
                return
            if not data and len(piece) < INFLATE_STEP:
                return

    def _fail(self, message: str) -> None:
        self._state, self.error = "failed", message

    def close_error(self) -> str | None:
        """The error to report at end of input, if the stream was cut short."""
        if self.error:
            return self.error
        if self._state == "body" or (self._state == "header" and (self._buf or not self._members)):
            return "gzip data truncated"
        return None  # a short trailer only: the content is complete


def _gzip_header_size(buf: bytes) -> int | None:
    """Size of the RFC 1952 member header at buf[0], None if incomplete, -1 if invalid."""
    if len(buf) < 10:
        return None if GZIP_MAGIC.startswith(buf[:2]) else -1
    if buf[:2] != GZIP_MAGIC or buf[2] != 8:
        return -1
    flags, pos = buf[3], 10
    if flags & 4:  # FEXTRA
        if len(buf) < pos + 2:
            return None
        pos += 2 + int.from_bytes(buf[pos : pos + 2], "little")
    for flag in (8, 16):  # FNAME, FCOMMENT: zero-terminated
        if flags & flag:
            end = buf.find(b"\x00", pos)
            if end < 0:
                return None
            pos = end + 1
    if flags & 2:  # FHCRC
        pos += 2
    return pos if len(buf) >= pos else None
