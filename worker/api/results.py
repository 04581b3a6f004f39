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
from .errors import ApiError, not_found
from .results_export import EXPORT_FORMATS, stream_urls
from .routes import MAX_JOB_ID, job_id_of
from .scope import POOL, SETTINGS, scope_of

DEFAULT_PAGE = 100
MAX_PAGE = 1000
URLS_PATH = "/api/v3/sitemap/jobs/{job_id}/urls"
EXTENSIONS = ("images", "videos", "news", "alternates")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/v3/sitemap/jobs/{job_id}/sitemaps", job_sitemaps)
    app.router.add_get(URLS_PATH, job_urls)


def bad_parameter(field: str, message: str) -> ApiError:
    """A query parameter that cannot be used: 422 naming it, in the validation errors' shape."""
    return ApiError(
        422,
        "invalid query: see details",
        [{"loc": ["query", field], "msg": message, "type": "value_error"}],
    )


def int_parameter(query: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    text = query.get(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise bad_parameter(name, f"must be a whole number, not {text[:40]!r}") from None
    if not low <= value <= high:
        raise bad_parameter(name, f"must be from {low} to {high}, not {value}")
    return value


def check_format(fmt: str) -> None:
    if fmt not in ("json", *EXPORT_FORMATS):
        raise bad_parameter("format", f"must be json, csv or ndjson, not {fmt[:40]!r}")


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
    query = request.rel_url.query
    fmt = query.get("format", "json")
    check_format(fmt)
    cursor = int_parameter(query, "cursor", 0, 0, MAX_JOB_ID)
    limit = int_parameter(query, "limit", DEFAULT_PAGE, 1, MAX_PAGE)
    scope = scope_of(request)
    if fmt != "json":
        streamed = await stream_urls(request, job_id, scope.tenant_id, fmt, after=cursor)
        if streamed is None:
            raise not_found()
        return streamed

    async def read(conn: asyncpg.Connection) -> list[asyncpg.Record]:
        return list(
            await conn.fetch(q("api_job_urls_page"), job_id, scope.tenant_id, cursor, limit + 1)
        )

    rows = await connections.pooled_transaction_to_end(
        request.app[POOL], request.app[SETTINGS], read, durable=False
    )
    if not rows:
        raise not_found()
    found = [row for row in rows if row["id"] is not None]
    page, more = found[:limit], len(found) > limit
    next_cursor = page[-1]["id"] if more else None
    body: dict[str, Any] = {
        "job_id": job_id,
        "count": len(page),
        "urls": [url_json(row) for row in page],
        "next_cursor": next_cursor,
        "next": (
            f"{URLS_PATH.format(job_id=job_id)}?cursor={next_cursor}&limit={limit}"
            if next_cursor
            else None
        ),
    }
    return web.json_response(body)


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
