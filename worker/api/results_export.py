"""Every URL row of a job as CSV or NDJSON, streamed in flat memory.

A loop of keyset pages: each page is its own short read on a pooled connection, released before
the page is written to the client. No transaction or server-side cursor is held while the client
reads, so a slow client holds no connection, and PgBouncer in transaction mode works; memory is
one page, whatever the job's size."""

from __future__ import annotations

import csv
import io

import asyncpg
from aiohttp import web

from .. import connections
from ..sql import q
from .scope import POOL, SETTINGS

EXPORT_FORMATS = ("csv", "ndjson")
EXPORT_PAGE = 5000
CSV_COLUMNS = (
    "loc",
    "lastmod",
    "lastmod_raw",
    "changefreq",
    "priority",
    "sitemap_file_id",
    "images",
    "videos",
    "news",
    "alternates",
)
CONTENT_TYPES = {"csv": "text/csv", "ndjson": "application/x-ndjson"}


async def stream_urls(
    request: web.Request,
    job_id: int,
    tenant_id: str | None,
    fmt: str,
    *,
    after: int = 0,
    filename: str | None = None,
) -> web.StreamResponse | None:
    """The whole export; None (nothing sent: the caller answers 404) when the caller cannot
    see the job. A job deleted while it streams ends the stream early (its rows are gone)."""
    ndjson = fmt == "ndjson"
    render = render_ndjson if ndjson else render_csv
    rows = await read_page(request, ndjson, job_id, tenant_id, after)
    if not rows:
        return None
    response = await open_export(request, fmt, filename or f"job-{job_id}-urls.{fmt}")
    while rows and rows[0]["id"] is not None:
        await response.write(render(rows))
        if len(rows) < EXPORT_PAGE:
            break
        rows = await read_page(request, ndjson, job_id, tenant_id, rows[-1]["id"])
    await response.write_eof()
    return response


async def open_export(request: web.Request, fmt: str, filename: str) -> web.StreamResponse:
    """The response's headers sent (and CSV's header line): the rows follow. An export with
    no rows at all is this and `write_eof()`."""
    response = web.StreamResponse(
        headers={
            "Content-Type": f"{CONTENT_TYPES[fmt]}; charset=utf-8",
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Cache-Control": "no-store",
        }
    )
    response.enable_compression()  # only when the client accepts it
    await response.prepare(request)
    if fmt == "csv":
        await response.write(csv_line(CSV_COLUMNS))
    return response


async def read_page(
    request: web.Request, ndjson: bool, job_id: int, tenant_id: str | None, after: int
) -> list[asyncpg.Record]:
    """One page in its own pooled transaction; the connection goes back before the page is sent."""

    async def read(conn: asyncpg.Connection) -> list[asyncpg.Record]:
        args = (job_id, tenant_id, after, EXPORT_PAGE)
        if ndjson:
            return list(await conn.fetch(q("api_job_urls_ndjson"), *args))
        return list(await conn.fetch(q("api_job_urls_page"), *args))

    return await connections.pooled_transaction_to_end(
        request.app[POOL], request.app[SETTINGS], read, durable=False
    )


def csv_line(values: tuple[str, ...]) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerow(values)
    return out.getvalue().encode()


def render_csv(rows: list[asyncpg.Record]) -> bytes:
    """RFC 4180 quoting by the csv module; null is an empty field; extensions as JSON text."""
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerows(
        (
            r["loc"],
            r["lastmod"].isoformat() if r["lastmod"] is not None else None,
            r["lastmod_raw"],
            r["changefreq"],
            r["priority"],
            r["sitemap_file_id"],
            r["images"],
            r["videos"],
            r["news"],
            r["alternates"],
        )
        for r in rows
    )
    return out.getvalue().encode()


def render_ndjson(rows: list[asyncpg.Record]) -> bytes:
    """PostgreSQL already wrote each row's JSON object: one per line."""
    return ("\n".join(row["line"] for row in rows) + "\n").encode()
