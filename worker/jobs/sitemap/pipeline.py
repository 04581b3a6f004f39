"""One file's URLs on their way from fetch and parse to the database, through a bounded queue.

Before, the HTTP body sink wrote each chunk of URLs itself: a slow database counted against
the fetch's deadline (and read as "timed out") and held a per-host slot. Now the sink only
parses and queues; a storage task per file drains the queue through UrlWriter, one short
phase per chunk. The choices:

- Back-pressure, bounded memory: the queue holds QUEUED_CHUNKS chunks of CHUNK URLs. A
  healthy database stores a chunk well before the network brings the next, so the queue
  rarely fills; when storage falls behind, the sink waits for room (TCP flow control then
  slows the server) and a file never holds more than QUEUED_CHUNKS + 2 chunks in memory.
- Each side has its own deadline: the fetch's total_timeout stands still while the sink
  waits for room (scan.fetch.deadline_paused; parsing still counts), so waiting on the
  database never reads as "timed out"; storage
  keeps the phases' own limits (statement timeout, lease), whose failure fails the job as a
  database error, as before.
- Host slots: a file whose URLs fit in the queue is read to its end, and its host slot
  freed, while storage catches up. A bigger file keeps its connection (and slot) while it
  waits for room: letting go mid-body would lose the rest or need unbounded memory.
- max_urls stays exact: a chunk's places are reserved when it is queued (so the sink stops
  on time) and given back by storage for URLs the job already had; at the cap the sink
  waits for storage to settle before it decides to stop.
- A failed write ends the file's storage; the sink sees it at its next chunk and raises it
  (a database failure fails the job) or stops reading (a chunk the database would not take,
  even cleaned: this file fails, the scan goes on).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Protocol, TypeVar

from ...errors import describe
from ...scan.fetch import deadline_paused
from ...scan.model import SitemapUrl
from .store import CHUNK, UNSTORABLE, FileRow, UrlWriter, open_row

QUEUED_CHUNKS = 4  # chunks waiting for storage, per file: 8,000 URLs, a few MB

T = TypeVar("T")


class Budget(Protocol):
    """The scan's URL count against its cap (ScanState)."""

    urls: int
    max_urls: int


class FileStore:
    """Stores one file's URLs in the background; put() from the sink, close() at the end."""

    def __init__(
        self, writer: UrlWriter, budget: Budget, file: FileRow | int, depth: int = QUEUED_CHUNKS
    ) -> None:
        self.writer, self.budget, self.file = writer, budget, file
        self.listed = 0  # URLs the file listed that count as kept (its url_count)
        self.stored = 0  # URL rows written under this file (new for the job)
        self.unstorable: str | None = None  # a chunk the database would not take, even cleaned
        self._queue: asyncio.Queue[tuple[list[SitemapUrl], int] | None] = asyncio.Queue(depth)
        self._task = asyncio.ensure_future(self._drain())

    async def put(self, chunk: list[SitemapUrl]) -> None:
        """Reserve the chunk's places under max_urls and queue it; waits while the queue is
        full. Raises what made storage fail."""
        self._check()
        if not chunk or self.unstorable:
            return
        self.listed += len(chunk)
        take = min(len(chunk), self.budget.max_urls - self.budget.urls)
        if take <= 0:
            return
        self.budget.urls += take  # reserved first: files storing side by side cannot pass max_urls
        try:
            self._queue.put_nowait((chunk, take))
        except asyncio.QueueFull:
            try:
                async with deadline_paused():
                    await self._race(self._queue.put((chunk, take)))
            except BaseException:
                self.budget.urls -= take  # never queued
                raise

    async def settle(self) -> None:
        """Wait until every queued chunk is stored: the budget then counts only what is."""
        self._check()
        async with deadline_paused():
            await self._race(self._queue.join())

    async def close(self) -> None:
        """Wait for the last chunk; raises what made storage fail."""
        self._check()
        await self._race(self._queue.put(None))
        await self._task

    async def abort(self) -> None:
        """Stop storing (the file's task was cancelled or failed); waits for the task's end."""
        if not self._task.done():
            self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        while not self._queue.empty():  # never stored: their places go back
            item = self._queue.get_nowait()
            if item is not None:
                self.budget.urls -= item[1]

    def _check(self) -> None:
        if self._task.done():
            self._task.result()  # storage failed: its error, here
            raise RuntimeError("the file's storage has ended")

    async def _race(self, waiting: Awaitable[T]) -> T:
        """`waiting`, unless storage fails first (then its error)."""
        wait = asyncio.ensure_future(waiting)
        try:
            await asyncio.wait((wait, self._task), return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not wait.done():
                wait.cancel()
                await asyncio.gather(wait, return_exceptions=True)
        if wait.done() and not wait.cancelled():
            return wait.result()
        self._check()
        raise RuntimeError("the file's storage has ended")

    async def _drain(self) -> None:
        while (item := await self._queue.get()) is not None:
            try:
                await self._store(*item)
            finally:
                self._queue.task_done()
        self._queue.task_done()

    async def _file_id(self) -> int:
        """The file's row id; a well-known path that turned out to be there gets its row
        now, before its URLs (they reference it; a write that fails leaves it saying
        'not finished')."""
        if isinstance(self.file, int):
            return self.file
        if self.file.id is None:
            await open_row(self.writer.ctx, self.file)
        assert self.file.id is not None
        return self.file.id

    async def _store(self, chunk: list[SitemapUrl], take: int) -> None:
        settled = False

        def counted(new: int) -> None:
            nonlocal settled
            settled = True
            self.budget.urls += new - take  # URLs the job already had give their places back
            self.stored += new

        try:
            if self.unstorable:
                self.listed -= len(chunk)
                return
            await self.writer.store(await self._file_id(), chunk[:take], counted)
        except UNSTORABLE as exc:  # this file fails; the scan goes on
            self.unstorable = f"URLs could not be stored: {describe(exc)}"
            self.listed -= len(chunk)
        finally:
            if not settled:
                self.budget.urls -= take


__all__ = ["CHUNK", "QUEUED_CHUNKS", "FileStore"]
