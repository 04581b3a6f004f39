"""Writes what a scan found, in short per-chunk transactions on the pooled connections.

Each write goes through the job's phase (JobContext.phase), so it commits together with
the job's progress and only while this worker still owns the job. Inserts are keyed per job
(md5 of the URL), so a job re-run after a crash adds nothing twice.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..context import JobContext
from ..sql import q
from .fetch import FetchResult
from .model import SitemapUrl

CHUNK = 2000  # URLs per insert statement: a few hundred KB, well inside one short transaction


@dataclass(slots=True)
class FileOutcome:
    kind: str | None
    error: str | None
    url_count: int
    truncated: bool
    bytes_uncompressed: int
    flag_only: bool = False  # `error` is a remark (e.g. over the spec's URL limit), not a failure


async def open_file(ctx: JobContext, url: str, parent_id: int | None, parent_url: str | None,
                    depth: int, source: str) -> int:
    async with ctx.phase() as conn:
        return await conn.fetchval(q("upsert_sitemap_file"), ctx.job.id, url, parent_id,
                                   parent_url, depth, source)


async def finish_file(ctx: JobContext, file_id: int, fetched: FetchResult, found: FileOutcome,
                      progress: float) -> None:
    error = fetched.error or found.error
    async with ctx.phase(progress=progress) as conn:
        await conn.execute(
            q("finish_sitemap_file"), file_id, fetched.final_url, found.kind,
            "error" if error and not found.url_count else "ok", error, found.url_count,
            found.truncated, fetched.status, fetched.bytes_read, found.bytes_uncompressed,
            fetched.content_type, fetched.etag, fetched.last_modified, fetched.elapsed * 1000)


async def stored_url_count(ctx: JobContext) -> int:
    """Page URLs this job has stored so far (by an earlier run, after a kill or a release)."""
    async with ctx.phase() as conn:
        return int(await conn.fetchval(q("stored_url_count"), ctx.job.id))


async def store_urls(ctx: JobContext, file_id: int, urls: list[SitemapUrl]) -> int:
    """One statement for the chunk; returns how many were new for this job."""
    async with ctx.phase() as conn:
        new: int = await conn.fetchval(q("insert_sitemap_urls"), ctx.job.id, file_id, *_columns(urls))
    ctx.metrics.urls_stored.inc(new)
    return new


def _columns(urls: list[SitemapUrl]) -> list[list[Any] | None]:
    return [
        [u.loc for u in urls],
        _sparse([u.lastmod_at for u in urls]),
        _sparse([u.lastmod for u in urls]),
        _sparse([u.changefreq for u in urls]),
        _sparse([u.priority for u in urls]),
        _sparse([_json(u.images) for u in urls]),
        _sparse([_json(u.videos) for u in urls]),
        _sparse([_json(u.news) for u in urls]),
        _sparse([_json(u.alternates) for u in urls]),
    ]


def _sparse(column: list[Any]) -> list[Any] | None:
    """A column with no value at all goes as one NULL instead of an array of them:
    multi-argument unnest() pads it with nulls, and encoding thousands of None elements
    is a good part of the client's CPU time per chunk (most sitemaps have no extensions)."""
    return column if any(v is not None for v in column) else None


def _json(value: Any) -> str | None:
    """Extension data as jsonb text, null when absent; NUL characters cannot be stored."""
    if not value:
        return None
    return json.dumps(value, default=str, ensure_ascii=False).replace("\\u0000", "")
