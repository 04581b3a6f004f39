"""The scan results over HTTP: the sitemap tree, keyset URL pages and the CSV/NDJSON export, on
the real application (build_app, real keys) on 127.0.0.1 and a real PostgreSQL, directly and
through PgBouncer."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web

from tests.api.conftest import Api
from worker import connections
from worker.api.app import build_app
from worker.database_urls import Urls
from worker.settings import Settings


@dataclass
class Server:
    """The real application (tests/api/conftest.py) and a key per tenant; None: an admin key."""

    api: Api
    keys: dict[str | None, str]

    def get(self, path: str, tenant: str | None = None, **params: str) -> Any:
        return self.api.get(path, key=self.keys[tenant], params=params)


@pytest.fixture
async def server(api: Api, make_key: Callable[..., Awaitable[str]]) -> Server:
    keys = {tenant: await make_key("tenant", tenant) for tenant in ("acme", "other")}
    return Server(api, {**keys, None: await make_key("admin")})


async def add_job(conn: asyncpg.Connection, tenant: str | None = "acme") -> int:
    payload = {"domain": "example.com", **({"tenant_id": tenant} if tenant else {})}
    return await conn.fetchval(
        "INSERT INTO jobs (job_type, payload, status) VALUES ('sitemap_scan', $1::jsonb,"
        " 'completed') RETURNING id",
        json.dumps(payload),
    )


async def add_file(
    conn: asyncpg.Connection, job_id: int, url: str, parent: int | None = None, **cols: object
) -> int:
    cols = {"status": "ok", **cols}
    names = ["job_id", "url", "parent_id", *cols]
    values = [job_id, url, parent, *cols.values()]
    marks = ", ".join(f"${i + 1}" for i in range(len(values)))
    return await conn.fetchval(
        f"INSERT INTO sitemap_files ({', '.join(names)}) VALUES ({marks}) RETURNING id", *values
    )


async def add_urls(conn: asyncpg.Connection, job_id: int, file_id: int, count: int, start=0):
    """`count` URL rows; every 7th with images and alternates, every 5th with a lastmod."""
    await conn.execute(
        """
        INSERT INTO sitemap_urls (job_id, sitemap_file_id, loc, lastmod, lastmod_raw,
                                  changefreq, priority, images, alternates)
        SELECT $1, $2, 'https://example.com/p/' || g,
               CASE WHEN g % 5 = 0 THEN timestamptz '2024-01-02 03:04:05+00' END,
               CASE WHEN g % 5 = 0 THEN '2024-01-02T03:04:05Z' END,
               CASE WHEN g % 3 = 0 THEN 'daily' END,
               CASE WHEN g % 2 = 0 THEN 0.8 END,
               CASE WHEN g % 7 = 0 THEN jsonb_build_array(jsonb_build_object(
                   'loc', 'https://example.com/i/' || g || '.jpg', 'title', 'a "b", c')) END,
               CASE WHEN g % 7 = 0 THEN jsonb_build_array(jsonb_build_object(
                   'hreflang', 'de', 'href', 'https://example.com/de/' || g)) END
          FROM generate_series($3::int + 1, $3::int + $4::int) g
        """,
        job_id,
        file_id,
        start,
        count,
    )


async def test_the_tree_lists_every_file_with_its_parent(server: Server, direct):
    job = await add_job(direct)
    index = await add_file(direct, job, "https://example.com/sitemap.xml", kind="index")
    a = await add_file(
        direct,
        job,
        "https://example.com/a.xml",
        index,
        kind="urlset",
        url_count=3,
        http_status=200,
        bytes=1234,
    )
    b = await add_file(
        direct,
        job,
        "https://example.com/b.xml",
        index,
        kind="html",
        status="error",
        error="HTTP 404",
        http_status=404,
    )
    async with server.get(f"/api/v3/sitemap/jobs/{job}/sitemaps", "acme") as resp:
        assert resp.status == 200, await resp.text()
        body = await resp.json()
    assert body["job_id"] == job and body["count"] == 3
    files = {f["id"]: f for f in body["sitemaps"]}
    assert [f["id"] for f in body["sitemaps"]] == [index, a, b]
    assert files[index]["parent_id"] is None and files[index]["kind"] == "index"
    assert files[a]["parent_id"] == index and files[a]["url_count"] == 3
    assert files[a]["http_status"] == 200 and files[a]["bytes"] == 1234
    assert files[b]["status"] == "error" and files[b]["error"] == "HTTP 404"
    assert files[b]["fetched_at"].startswith("20")


async def test_another_tenants_job_is_missing_on_both_routes(server: Server, direct):
    job = await add_job(direct, "acme")
    file_id = await add_file(direct, job, "https://example.com/a.xml")
    await add_urls(direct, job, file_id, 3)
    empty = await add_job(direct, "acme")
    for path in ("sitemaps", "urls", "urls?format=csv", "urls?format=ndjson"):
        async with server.get(f"/api/v3/sitemap/jobs/{job}/{path}", "other") as resp:
            assert resp.status == 404, path
            assert await resp.json() == {"error": "no such job", "details": []}
        async with server.get(f"/api/v3/sitemap/jobs/999999/{path}") as resp:
            assert resp.status == 404, path
        async with server.get(f"/api/v3/sitemap/jobs/{job}/{path.split('?')[0]}") as resp:
            assert resp.status == 200, path  # admin sees it
    for bad in ("abc", "0", "-1", "99999999999999999999"):
        async with server.get(f"/api/v3/sitemap/jobs/{bad}/urls") as resp:
            assert resp.status == 404, bad
    async with server.get(f"/api/v3/sitemap/jobs/{empty}/sitemaps", "acme") as resp:
        assert (await resp.json())["sitemaps"] == []
    async with server.get(f"/api/v3/sitemap/jobs/{empty}/urls", "acme") as resp:
        assert await resp.json() == {
            "job_id": empty,
            "count": 0,
            "urls": [],
            "next_cursor": None,
            "next": None,
        }


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"cursor": "-1"}, "cursor"),
        ({"cursor": "x"}, "cursor"),
        ({"format": "xml"}, "format"),
    ],
)
async def test_bad_parameters_are_422_naming_the_field(server: Server, direct, params, field):
    job = await add_job(direct)
    async with server.get(f"/api/v3/sitemap/jobs/{job}/urls", **params) as resp:
        assert resp.status == 422
        body = await resp.json()
    assert body["details"][0]["loc"] == ["query", field], body


async def test_pages_walk_every_row_once_while_rows_are_added(server: Server, direct):
    job = await add_job(direct)
    file_id = await add_file(direct, job, "https://example.com/a.xml")
    await add_urls(direct, job, file_id, 2500)
    other = await add_job(direct)  # another job's rows interleave by id
    await add_urls(direct, other, await add_file(direct, other, "https://x.org/s.xml"), 500)
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params = {"limit": "700", **({"cursor": cursor} if cursor else {})}
        async with server.get(f"/api/v3/sitemap/jobs/{job}/urls", **params) as resp:
            assert resp.status == 200
            body = await resp.json()
        seen += [u["loc"] for u in body["urls"]]
        pages += 1
        if pages == 2:  # a scan still running adds rows behind the cursor
            await add_urls(direct, job, file_id, 100, start=2500)
        cursor = body["next_cursor"] and str(body["next_cursor"])
        if cursor is None:
            break
        assert body["next"].endswith(f"cursor={cursor}&limit=700")
    assert len(seen) == len(set(seen)) == 2600
    assert set(seen) == {f"https://example.com/p/{i}" for i in range(1, 2601)}
    assert pages == 4


async def test_a_page_row_carries_its_extensions(server: Server, direct):
    job = await add_job(direct)
    await add_urls(direct, job, await add_file(direct, job, "https://e.com/s.xml"), 14)
    async with server.get(f"/api/v3/sitemap/jobs/{job}/urls", limit="14") as resp:
        rows = (await resp.json())["urls"]
    row = rows[13]  # p/14: a 7th and an even one, not a 5th
    assert row["loc"] == "https://example.com/p/14"
    assert row["priority"] == 0.8 and row["lastmod"] is None and row["videos"] is None
    assert row["images"] == [{"loc": "https://example.com/i/14.jpg", "title": 'a "b", c'}]
    assert row["alternates"] == [{"hreflang": "de", "href": "https://example.com/de/14"}]
    assert rows[9]["lastmod"] == "2024-01-02T03:04:05+00:00"
    assert rows[9]["lastmod_raw"] == "2024-01-02T03:04:05Z"


EXPORT_ROWS = 30_000


async def test_csv_export_streams_every_row(server: Server, direct):
    job = await add_job(direct)
    file_id = await add_file(direct, job, "https://example.com/a.xml")
    await add_urls(direct, job, file_id, EXPORT_ROWS)
    await direct.execute(  # a loc that needs quoting
        "INSERT INTO sitemap_urls (job_id, sitemap_file_id, loc) VALUES ($1, $2, $3)",
        job,
        file_id,
        'https://example.com/q?a=1,b="2"\nx',
    )
    async with server.get(f"/api/v3/sitemap/jobs/{job}/urls", "acme", format="csv") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "text/csv; charset=utf-8"
        assert resp.headers["Content-Disposition"] == f'attachment; filename="job-{job}-urls.csv"'
        text = await resp.text()
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    assert len(rows) == EXPORT_ROWS + 1
    assert len({r["loc"] for r in rows}) == EXPORT_ROWS + 1
    assert rows[-1]["loc"] == 'https://example.com/q?a=1,b="2"\nx'
    by_loc = {r["loc"]: r for r in rows}
    r14, r10 = by_loc["https://example.com/p/14"], by_loc["https://example.com/p/10"]
    assert json.loads(r14["images"])[0]["title"] == 'a "b", c'
    assert json.loads(r14["alternates"]) == [
        {"hreflang": "de", "href": "https://example.com/de/14"}
    ]
    assert r14["priority"] == "0.8" and r14["lastmod"] == "" and r14["videos"] == ""
    assert r10["lastmod"] == "2024-01-02T03:04:05+00:00" and r10["sitemap_file_id"] == str(file_id)


async def test_ndjson_export_streams_every_row(server: Server, direct):
    job = await add_job(direct)
    await add_urls(direct, job, await add_file(direct, job, "https://e.com/s.xml"), EXPORT_ROWS)
    async with server.get(f"/api/v3/sitemap/jobs/{job}/urls", format="ndjson") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "application/x-ndjson; charset=utf-8"
        lines = (await resp.text()).splitlines()
    rows = [json.loads(line) for line in lines]
    assert len(rows) == EXPORT_ROWS
    assert [r["loc"] for r in rows] == [f"https://example.com/p/{i}" for i in range(1, 30_001)]
    assert rows[13]["images"] == [{"loc": "https://example.com/i/14.jpg", "title": 'a "b", c'}]
    assert rows[13]["priority"] == 0.8 and rows[13]["news"] is None
    assert rows[9]["lastmod"].startswith("2024-01-02T03:04:05")


async def test_a_stalled_export_holds_no_connection(urls: Urls, api_settings: Settings, direct):
    """With a pool of ONE connection, a client that stops reading an export mid-way (about
    12 MB, more than the socket buffers hold) must not block the next request: each page
    gives its connection back before it is written."""
    job = await add_job(direct)
    await add_urls(direct, job, await add_file(direct, job, "https://e.com/s.xml"), 150_000)
    pool = await connections.create_pool(urls.work, api_settings, size=1)
    runner = web.AppRunner(build_app(pool, api_settings, open_on_loopback=True), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}/api/v3/sitemap/jobs/{job}"
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http,
            http.get(f"{base}/urls?format=csv") as stalled,
        ):
            assert stalled.status == 200
            await stalled.content.readexactly(1024)  # then stop reading
            async with http.get(f"{base}/sitemaps") as resp:
                assert resp.status == 200
    finally:
        await runner.cleanup()
        await pool.close()
