"""Writes what a scan found, in short per-chunk transactions on the pooled connections.

Each write goes through the job's phase (JobContext.run_phase), so it commits only while this
worker still owns the job. A well-known path's row is written only when there is something
to write (before its first chunk of URLs, or whole at its end), so the paths a site does not
have cost one statement per scan, not two each. A URL is unique per job by its text (URLs
over 2,000 bytes by md5 of it: migration 0007), so a job re-run after a crash adds nothing
twice.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC
from itertools import repeat
from operator import attrgetter
from typing import Any

import asyncpg

from ...context import JobContext
from ...errors import storable
from ...scan.fetch import FetchResult
from ...scan.model import SitemapUrl
from ...sql import q

DEADLOCK_ATTEMPTS = 3
CHUNK = 2000  # URLs per insert statement: a few hundred KB, well inside one short transaction
URL_COLUMNS = (
    "job_id",
    "sitemap_file_id",
    "loc",
    "lastmod",
    "lastmod_raw",
    "changefreq",
    "priority",
    "images",
    "videos",
    "news",
    "alternates",
)
# A value the driver cannot encode (a lone surrogate, a date that leaves the calendar once
# put in UTC: 0001-01-01T00:00+14:00) or the server refuses (class 22): the chunk's values
# are cleaned once and written again; a chunk that still fails fails its file, not the job.
UNSTORABLE: tuple[type[BaseException], ...] = (
    asyncpg.DataError,
    OverflowError,
    UnicodeError,
    ValueError,
)


@dataclass(slots=True)
class FileOutcome:
    kind: str | None
    error: str | None
    url_count: int
    truncated: bool
    bytes_uncompressed: int
    flag_only: bool = False  # `error` is a remark (e.g. over the spec's URL limit), not a failure
    stored: int = 0  # URL rows stored under the file (listed less those the job had already)
    content_hash: str | None = None  # of the whole body; None when it was not read whole
    children: list[str] | None = None  # an index's child sitemaps, as listed


@dataclass(slots=True)
class FileRow:
    """A sitemap file's row. A file listed by robots.txt or an index gets it before its fetch
    (open_row); a well-known path only once there is something to write: before its first
    chunk of URLs (they reference it), or whole, in one statement, when it is done without
    any (record_files; the paths a site does not have, all in one at the end
    of the scan). `id` is set once the row is committed."""

    url: str
    parent_id: int | None
    parent_url: str | None
    depth: int
    source: str
    id: int | None = None

    @classmethod
    def of(
        cls, url: str, parent_id: int | None, parent_url: str | None, depth: int, source: str
    ) -> FileRow:
        return cls(storable(url), parent_id, _text(parent_url), depth, source)

    async def open_in(self, conn: asyncpg.Connection, job_id: int) -> int:
        """Insert the row as 'not finished' (a re-run finds its old one): its id."""
        file_id: int = await conn.fetchval(
            q("upsert_sitemap_file"),
            job_id,
            self.url,
            self.parent_id,
            self.parent_url,
            self.depth,
            self.source,
        )
        return file_id


async def open_file(
    ctx: JobContext,
    url: str,
    parent_id: int | None,
    parent_url: str | None,
    depth: int,
    source: str,
) -> int:
    """A file's row on its own, before any URL: its id."""
    row = FileRow.of(url, parent_id, parent_url, depth, source)
    await open_row(ctx, row)
    assert row.id is not None
    return row.id


async def open_row(ctx: JobContext, file: FileRow) -> None:
    """Write the file's row now, as 'not finished', in a phase of its own (a listed file:
    it shows among the job's files while it is read, and says so if the scan stops)."""
    file.id = await ctx.run_phase(lambda conn: file.open_in(conn, ctx.job.id))


def file_facts(fetched: FetchResult, found: FileOutcome) -> tuple[Any, ...]:
    """The file's final columns, final_url .. children (finish_sitemap_file's $2..$17). Any
    error but a remark (flag_only) makes it an `error`, URLs kept or not; every text is
    cleaned first, so what a site sent cannot fail the write."""
    error = _text(found.error if found.error is not None else fetched.error)
    return (
        _text(fetched.final_url),
        found.kind,
        "error" if error and not found.flag_only else "ok",
        error,
        found.url_count,
        found.truncated,
        fetched.status,
        fetched.bytes_read,
        found.bytes_uncompressed,
        _text(fetched.content_type),
        _text(fetched.etag),
        _text(fetched.last_modified),
        fetched.elapsed * 1000,
        found.stored,
        found.content_hash,
        None if found.children is None else json.dumps([storable(c) for c in found.children]),
    )


async def finish_file(
    ctx: JobContext, file: FileRow, fetched: FetchResult, found: FileOutcome
) -> None:
    """The file's final row: an update of its open row, or the whole row in one statement
    when it has none yet (then `file.id` is set)."""
    facts = file_facts(fetched, found)
    if file.id is not None:
        file_id = file.id
        await ctx.run_phase(lambda conn: conn.execute(q("finish_sitemap_file"), file_id, *facts))
        return
    [file.id] = await record_files(ctx, [(file, facts)])


async def record_files(ctx: JobContext, files: list[tuple[FileRow, tuple[Any, ...]]]) -> list[int]:
    """Whole rows of files that stored no URL, in one statement and one phase (a scan's
    well-known paths that answered 404 go together at its end). Their ids, in order."""
    rows = [(f.url, f.parent_id, f.parent_url, f.depth, f.source, *facts) for f, facts in files]
    columns = [list(column) for column in zip(*rows, strict=True)]

    async def record(conn: asyncpg.Connection) -> list[int]:
        return [r["id"] for r in await conn.fetch(q("record_sitemap_files"), ctx.job.id, *columns)]

    return await ctx.run_phase(record)


async def stored_url_count(ctx: JobContext) -> int:
    """Page URLs this job has stored so far (by an earlier run, after a kill or a release)."""
    return int(await ctx.run_phase(lambda conn: conn.fetchval(q("stored_url_count"), ctx.job.id)))


class UrlWriter:
    """Stores one job's page URLs, a chunk per phase.

    Binary COPY first: it costs PostgreSQL much less CPU than an INSERT ... ON CONFLICT
    (measured: 3.0 s against 4.8 s of server CPU for 500,000 rows), and most jobs never
    list a URL twice. COPY cannot skip a duplicate, so the first URL already stored for
    the job (one listed by two sitemaps, or kept from an earlier run) rolls that chunk back
    with a unique violation; the chunk is then written again with ON CONFLICT DO NOTHING,
    and so is every later one. A re-run of a job that already stored URLs skips straight to that.

    Chunks commit without waiting for the WAL flush: a chunk lost in a server crash is
    redone by the job's re-run, and the job's durable final status flushes them all."""

    def __init__(self, ctx: JobContext, *, stored_before: int) -> None:
        self.ctx = ctx
        self.copying = stored_before == 0

    async def store(
        self, file_id: int, urls: list[SitemapUrl], counted: Callable[[int], None] | None = None
    ) -> int:
        """Returns how many of `urls` were new for this job, and tells `counted` from inside
        the write's transaction, which runs to its end even if the caller is cancelled
        meanwhile (the fetch deadline, a failed sibling): what is committed is counted."""
        # In URL order: two files of the job writing the same URLs side by side then take
        # the index's row locks in the same order, and wait rather than deadlock. (Long
        # URLs are keyed by md5, in another order: a deadlock there is retried.)
        urls.sort(key=_by_loc)
        try:
            return await self._store(file_id, urls, counted)
        except UNSTORABLE:
            if not _clean(urls):
                raise  # nothing to clean: the chunk is bad some other way
        return await self._store(file_id, urls, counted)

    async def _store(
        self, file_id: int, urls: list[SitemapUrl], counted: Callable[[int], None] | None
    ) -> int:
        attempt = 1
        while True:
            try:
                new = await self._copy(file_id, urls, counted) if self.copying else None
                if new is None:
                    new = await self.ctx.run_phase(
                        lambda conn: self._insert(conn, file_id, urls, counted), durable=False
                    )
                return new
            except asyncpg.DeadlockDetectedError:
                self.copying = False  # the other side has committed its rows, or will
                if attempt == DEADLOCK_ATTEMPTS:
                    raise
                attempt += 1

    async def _copy(
        self, file_id: int, urls: list[SitemapUrl], counted: Callable[[int], None] | None
    ) -> int | None:
        """None when a URL was already there: nothing of the chunk was written."""
        names, rows = _copy_rows(self.ctx.job.id, file_id, urls)

        async def copy(conn: asyncpg.Connection) -> int:
            await conn.copy_records_to_table("sitemap_urls_stored", records=rows, columns=names)
            return await self._count(conn, file_id, len(urls), len(rows), counted)

        try:
            return await self.ctx.run_phase(copy, durable=False)
        except asyncpg.UniqueViolationError:
            self.copying = False
            return None

    async def _insert(
        self,
        conn: asyncpg.Connection,
        file_id: int,
        urls: list[SitemapUrl],
        counted: Callable[[int], None] | None,
    ) -> int:
        new: int = await conn.fetchval(
            q("insert_sitemap_urls"), self.ctx.job.id, file_id, *_columns(urls)
        )
        return await self._count(conn, file_id, len(urls), new, counted)

    async def _count(
        self,
        conn: asyncpg.Connection,
        file_id: int,
        listed: int,
        new: int,
        counted: Callable[[int], None] | None,
    ) -> int:
        """The chunk's last statement, then its counts: only a failed commit (which fails
        the job) could still undo what is counted here."""
        await conn.execute(q("count_file_urls"), file_id, listed)
        self.ctx.metrics.urls_stored.inc(new)
        if counted is not None:
            counted(new)
        return new


_by_loc = attrgetter("loc")


def _copy_rows(
    job_id: int, file_id: int, urls: list[SitemapUrl]
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """COPY rows holding only the columns the chunk has a value in: the rest default to null,
    and encoding fewer columns is a good part of the client's CPU time per row."""
    names = list(URL_COLUMNS[:2])
    columns: list[Iterable[Any]] = [repeat(job_id), repeat(file_id)]
    for name, column in zip(URL_COLUMNS[2:], _columns(urls), strict=True):
        if column is not None:
            names.append(name)
            columns.append(column)
    return names, list(zip(*columns, strict=False))  # repeat() columns stop with the loc column


def _columns(urls: list[SitemapUrl]) -> list[list[Any] | None]:
    return [
        [u.loc for u in urls],
        _sparse([u.lastmod_at for u in urls]),
        _sparse([u.lastmod for u in urls]),
        _sparse([u.changefreq for u in urls]),
        _sparse([u.priority for u in urls]),
        _json_column([u.images for u in urls]),
        _json_column([u.videos for u in urls]),
        _json_column([u.news for u in urls]),
        _json_column([u.alternates for u in urls]),
    ]


def _json_column(values: list[Any]) -> list[str | None] | None:
    """Extension data is absent from most sitemaps: an empty column costs one any()."""
    return [_json(v) for v in values] if any(values) else None


def _sparse(column: list[Any]) -> list[Any] | None:
    """A column with no value at all goes as one NULL instead of an array of them:
    multi-argument unnest() pads it with nulls, and encoding thousands of None elements
    is a good part of the client's CPU time per chunk (most sitemaps have no extensions)."""
    return column if any(v is not None for v in column) else None


# A NUL's escape in JSON text: \u0000 after an even number of backslashes (none, or pairs that
# each stand for one backslash). After an odd number it is the text "\u0000", not a NUL.
_ESCAPED_NUL = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")


def _json(value: Any) -> str | None:
    """Extension data as jsonb text, null when absent; NUL characters cannot be stored in
    jsonb, so their escapes are dropped (and only theirs: "C:\\u0000" stays as written)."""
    if not value:
        return None
    text = json.dumps(value, default=str, ensure_ascii=False)
    return _ESCAPED_NUL.sub(r"\1", text) if "\\u0000" in text else text


def _text(value: str | None) -> str | None:
    return None if value is None else storable(value)


def _clean(urls: list[SitemapUrl]) -> bool:
    """Make a chunk's values storable in place (the slow path after a failed write): text
    through storable(), a date that has no UTC equivalent dropped (its raw text stays).
    Returns whether anything changed."""
    changed = False
    for u in urls:
        before = (
            u.loc,
            u.lastmod,
            u.lastmod_at,
            u.changefreq,
            u.images,
            u.videos,
            u.news,
            u.alternates,
        )
        u.loc = storable(u.loc)
        u.lastmod, u.changefreq = _text(u.lastmod), _text(u.changefreq)
        if u.lastmod_at is not None:
            try:
                u.lastmod_at.astimezone(UTC)
            except (OverflowError, ValueError):
                u.lastmod_at = None
        u.images, u.videos, u.alternates = _deep(u.images), _deep(u.videos), _deep(u.alternates)
        u.news = _deep(u.news)
        changed = changed or before != (
            u.loc,
            u.lastmod,
            u.lastmod_at,
            u.changefreq,
            u.images,
            u.videos,
            u.news,
            u.alternates,
        )
    return changed


def _deep(value: Any) -> Any:
    """Extension data with every string made storable (dicts, lists and tuples kept as such)."""
    if isinstance(value, str):
        return storable(value)
    if isinstance(value, dict):
        return {storable(str(k)): _deep(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_deep(v) for v in value)
    return value
