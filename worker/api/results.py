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
from .results_export import EXPORT_FORMATS, stream_urls
from .scope import POOL, SETTINGS, scope_of

MAX_JOB_ID = 2**63 - 1
DEFAULT_PAGE = 100
MAX_PAGE = 1000
URLS_PATH = "/api/v3/sitemap/jobs/{job_id}/urls"
EXTENSIONS = ("images", "videos", "news", "alternates")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/v3/sitemap/jobs/{job_id}/sitemaps", job_sitemaps)
    app.router.add_get(URLS_PATH, job_urls)


class BadParameter(Exception):
    """A query or path parameter that cannot be used: a 422 naming the field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def error_response(
    status: int, error: str, details: list[dict[str, Any]] | None = None
) -> web.Response:
    """The contract's error shape: `{"error": ..., "details": [...]}`."""
    return web.json_response({"error": error, "details": details or []}, status=status)


def not_found(job_id: object) -> web.Response:
    """Missing and another tenant's look the same."""
    return error_response(404, "no such job")


def job_id_of(request: web.Request) -> int | None:
    """The path's job id; None when it names no possible job (a 404, like a missing one)."""
    text = request.match_info["job_id"]
    if not text.isascii() or not text.isdigit():
        return None
    value = int(text)
    return value if 1 <= value <= MAX_JOB_ID else None


def int_parameter(query: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    text = query.get(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise BadParameter(name, f"must be a whole number, not {text[:40]!r}") from None
    if not low <= value <= high:
        raise BadParameter(name, f"must be from {low} to {high}, not {value}")
    return value


def check_format(fmt: str) -> None:
    if fmt not in ("json", *EXPORT_FORMATS):
        raise BadParameter("format", f"must be json, csv or ndjson, not {fmt[:40]!r}")


async def job_sitemaps(request: web.Request) -> web.Response:
    """GET /api/v3/sitemap/jobs/{job_id}/sitemaps: every sitemap file the job fetched or tried,
    in id order; `parent_id` links a file to the index that listed it (null at the top)."""
    job_id = job_id_of(request)
    if job_id is None:
        return not_found(request.match_info["job_id"])
    scope = scope_of(request)

    async def read(conn: asyncpg.Connection) -> list[asyncpg.Record]:
        return list(await conn.fetch(q("api_job_sitemaps"), job_id, scope.tenant_id))

    rows = await connections.pooled_transaction_to_end(
        request.app[POOL], request.app[SETTINGS], read, durable=False
    )
    if not rows:
        return not_found(job_id)
    files = [file_json(row) for row in rows if row["id"] is not None]
    return web.json_response({"job_id": job_id, "count": len(files), "sitemaps": files})


def file_json(row: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(row)
    out["fetched_at"] = row["fetched_at"].isoformat() if row["fetched_at"] else None
    return out


async def job_urls(request: web.Request) -> web.StreamResponse:
    """GET /api/v3/sitemap/jobs/{job_id}/urls: one keyset page (`limit`, `cursor` from the last
    page's `next`), or with `format=csv|ndjson` every row, streamed."""
    job_id = job_id_of(request)
    if job_id is None:
        return not_found(request.match_info["job_id"])
    query = request.rel_url.query
    fmt = query.get("format", "json")
    try:
        check_format(fmt)
        cursor = int_parameter(query, "cursor", 0, 0, MAX_JOB_ID)
        limit = int_parameter(query, "limit", DEFAULT_PAGE, 1, MAX_PAGE)
    except BadParameter as exc:
        return error_response(
            422,
            "invalid query: see details",
            [{"loc": ["query", exc.field], "msg": exc.message, "type": "value_error"}],
        )
    scope = scope_of(request)
    if fmt != "json":
        streamed = await stream_urls(request, job_id, scope.tenant_id, fmt, after=cursor)
        return streamed if streamed is not None else not_found(job_id)

    async def read(conn: asyncpg.Connection) -> list[asyncpg.Record]:
        return list(
            await conn.fetch(q("api_job_urls_page"), job_id, scope.tenant_id, cursor, limit + 1)
        )

    rows = await connections.pooled_transaction_to_end(
        request.app[POOL], request.app[SETTINGS], read, durable=False
    )
    if not rows:
        return not_found(job_id)
    found = [row for row in rows if row["id"] is not None]
    page, more = found[:limit], len(found) > limit
    next_cursor = str(page[-1]["id"]) if more else None
    body: dict[str, Any] = {
        "job_id": job_id,
        "count": len(page),
        "urls": [url_json(row) for row in page],
        "next": next_cursor,
        "next_url": (
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
