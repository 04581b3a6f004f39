"""What a scan stored, read over HTTP: its sitemap file tree and its URL rows, page by page.

Every read is one short pooled transaction whose query also checks that the caller may see the
job, so another tenant's job answers 404 exactly like a missing one. `?format=csv|ndjson` on the
URL route hands over to results_export, which streams every row."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import asyncpg
from aiohttp import web

from .. import connections
from ..sql import q
from .domain_models import UrlPage, UrlsQuery
from .errors import not_found, validate
from .results_export import stream_urls
from .routes import Operation, add_operation, job_id_of
from .scope import POOL, SETTINGS, scope_of

URLS_PATH = "/api/v3/sitemap/jobs/{job_id}/urls"
EXTENSIONS = ("images", "videos", "news", "alternates")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/v3/sitemap/jobs/{job_id}/sitemaps", job_sitemaps)
    add_operation(
        app,
        Operation(
            "GET",
            URLS_PATH,
            job_urls,
            "A job's URL rows: keyset pages, or every row with format=csv|ndjson",
            query=UrlsQuery,
            response=UrlPage,
        ),
    )


async def job_sitemaps(request: web.Request) -> web.Response:
    """A job's sitemap files (the tree: parent_id links a file to the index that listed it).

    Every sitemap file the job fetched or tried, in id order (null parent_id at the top)."""
    job_id = job_id_of(request)
    scope = scope_of(request)

    async def read(conn: asyncpg.Connection) -> list[asyncpg.Record]:
        return list(await conn.fetch(q("api_job_sitemaps"), job_id, scope.tenant_id))

    rows = await connections.pooled_transaction_to_end(
        request.app[POOL], request.app[SETTINGS], read, durable=False
    )
    if not rows:
        raise not_found()
    files = [file_json(row) for row in rows if row["id"] is not None]
    return web.json_response({"job_id": job_id, "count": len(files), "sitemaps": files})


def file_json(row: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(row)
    out["fetched_at"] = row["fetched_at"].isoformat() if row["fetched_at"] else None
    return out


async def job_urls(request: web.Request) -> web.StreamResponse:
    """A job's URL rows: keyset pages (limit, cursor), or all of them with format=csv|ndjson.

    `cursor` is the last page's `next_cursor` (`next` is the next page's URL, null on the
    last); `limit` 1-1000, default 100. The exports stream every row."""
    job_id = job_id_of(request)
    query = validate(UrlsQuery, dict(request.rel_url.query), "query")
    scope = scope_of(request)
    if query.format != "json":
        streamed = await stream_urls(
            request, job_id, scope.tenant_id, query.format, after=query.cursor
        )
        if streamed is None:
            raise not_found()
        return streamed
    rows = await read_url_page(request, job_id, scope.tenant_id, query.cursor, query.limit)
    if rows is None:
        raise not_found()
    return web.json_response(
        {"job_id": job_id, **url_page_body(rows, query.limit, URLS_PATH.format(job_id=job_id))}
    )


async def read_url_page(
    request: web.Request, job_id: int, tenant_id: str | None, cursor: int, limit: int
) -> list[asyncpg.Record] | None:
    """Up to `limit + 1` URL rows after `cursor` (the extra one says there are more); None
    when the job is missing or not the caller's."""

    async def read(conn: asyncpg.Connection) -> list[asyncpg.Record]:
        return list(await conn.fetch(q("api_job_urls_page"), job_id, tenant_id, cursor, limit + 1))

    rows = await connections.pooled_transaction_to_end(
        request.app[POOL], request.app[SETTINGS], read, durable=False
    )
    return [row for row in rows if row["id"] is not None] if rows else None


def url_page_body(rows: list[asyncpg.Record], limit: int, path: str) -> dict[str, Any]:
    """`count`, `urls`, `next_cursor` and `next` (the next page's URL: `path` + cursor; `path`
    may carry a query string of its own)."""
    page, more = rows[:limit], len(rows) > limit
    next_cursor = page[-1]["id"] if more else None
    joiner = "&" if "?" in path else "?"
    return {
        "count": len(page),
        "urls": [url_json(row) for row in page],
        "next_cursor": next_cursor,
        "next": f"{path}{joiner}cursor={next_cursor}&limit={limit}" if next_cursor else None,
    }


def url_json(row: Mapping[str, Any]) -> dict[str, Any]:
    """A URL row as the API shows it; the extension columns arrive as JSON text."""
    return {
        "loc": row["loc"],
        "lastmod": row["lastmod"].isoformat() if row["lastmod"] else None,
        "lastmod_raw": row["lastmod_raw"],
        "changefreq": row["changefreq"],
        "priority": float(row["priority"]) if row["priority"] is not None else None,
        "sitemap_file_id": row["sitemap_file_id"],
        **{name: json.loads(row[name]) if row[name] is not None else None for name in EXTENSIONS},
    }
