"""The dashboard's pages over real HTTP and a real database: what each shows, escaping, and
that a tenant never sees another tenant's jobs."""

from __future__ import annotations

import html
import json
import re

import asyncpg
import pytest

from tests.dashboard.conftest import Dashboard
from worker.api.scope import Scope
from worker.dashboard import jobs_list


async def insert(conn: asyncpg.Connection, job_type: str = "sitemap_scan", **fields: object) -> int:
    payload = fields.pop("payload", {"domain": "example.com"})
    columns = ["job_type", "payload", *fields]
    values = [job_type, json.dumps(payload), *fields.values()]
    marks = ", ".join(f"${i}" for i in range(1, len(values) + 1))
    return await conn.fetchval(
        f"INSERT INTO jobs ({', '.join(columns)}) VALUES ({marks}) RETURNING id", *values
    )


async def test_overview_counts_jobs_by_status_and_lists_failures(
    dashboard: Dashboard, direct: asyncpg.Connection
) -> None:
    await insert(direct)
    failed = await insert(
        direct, status="failed", error="<script>alert(1)</script> boom", finished_at=None
    )
    status, page = await dashboard.get("/")
    assert status == 200, page
    assert 'data-state="queued"' in page
    assert f'href="/jobs/{failed}"' in page
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt; boom" in page
    assert "<svg" in page


async def test_overview_of_a_tenant_shows_only_its_jobs(
    dashboard: Dashboard, direct: asyncpg.Connection
) -> None:
    mine = await insert(
        direct, status="failed", error="mine", payload={"domain": "a.test", "tenant_id": "t1"}
    )
    theirs = await insert(
        direct, status="failed", error="theirs", payload={"domain": "b.test", "tenant_id": "t2"}
    )
    dashboard.scope = Scope(tenant_id="t1", admin=False, key_id=1)
    _, page = await dashboard.get("/")
    assert f'href="/jobs/{mine}"' in page
    assert f'href="/jobs/{theirs}"' not in page


async def test_jobs_list_filters_and_pages_by_keyset(
    dashboard: Dashboard, direct: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jobs_list, "PAGE_SIZE", 3)
    ids = [await insert(direct, payload={"domain": f"d{i}.test"}) for i in range(5)]
    failed = await insert(
        direct, status="failed", error="DNS lookup failed", payload={"domain": "x.test"}
    )
    _, page = await dashboard.get("/jobs?status=pending")
    shown = [int(m) for m in re.findall(r'<tr data-job="(\d+)"', page)]
    assert shown == ids[::-1][:3]
    older = re.search(r'href="(/jobs\?[^"]*before=\d+[^"]*)"', page)
    assert older, page
    _, page2 = await dashboard.get(html.unescape(older.group(1)))
    assert [int(m) for m in re.findall(r'<tr data-job="(\d+)"', page2)] == ids[::-1][3:]
    cancelled = await insert(direct, status="cancelled", error="dns lookup: retrying")
    _, found = await dashboard.get("/jobs?error=dns+LOOKUP")  # each status's index, merged
    assert re.findall(r'<tr data-job="(\d+)"', found) == [str(cancelled), str(failed)]
    _, found = await dashboard.get("/jobs?error=dns+LOOKUP&status=failed")
    assert re.findall(r'<tr data-job="(\d+)"', found) == [str(failed)]
    _, by_domain = await dashboard.get("/jobs?domain=d2.test")
    assert re.findall(r'<tr data-job="(\d+)"', by_domain) == [str(ids[2])]
    status, location, _ = await dashboard.get_no_redirect("/jobs?id=%23" + str(failed))
    assert status == 303 and location == f"/jobs/{failed}"
    status, bad = await dashboard.get("/jobs?status=nonsense")
    assert status == 422 and "status: one of" in bad


async def test_bulk_retry_confirms_the_count_then_moves_exactly_those(
    dashboard: Dashboard, direct: asyncpg.Connection
) -> None:
    failed = [await insert(direct, status="failed", error="timeout", attempts=3) for _ in range(3)]
    other = await insert(direct, status="failed", error="refused", attempts=3)
    _, confirm = await dashboard.get("/jobs/bulk?action=retry&status=failed&error=timeout")
    assert '<strong id="bulk-count">3</strong>' in confirm
    fields = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', confirm))
    late = await insert(direct, status="failed", error="timeout", attempts=3)  # after confirming
    status, location, _ = await dashboard.post("/jobs/bulk", fields)
    assert status == 303 and "done=retry" in location and "n=3" in location
    rows = await direct.fetch("SELECT id, status, attempts FROM jobs ORDER BY id")
    by_id = {r["id"]: (r["status"], r["attempts"]) for r in rows}
    assert all(by_id[i] == ("pending", 0) for i in failed)
    assert by_id[other] == ("failed", 3)
    assert by_id[late] == ("failed", 3)
    _, page = await dashboard.get(location)
    assert "3 job(s) set back to pending." in page


async def test_bulk_cancel_of_a_tenant_touches_only_its_jobs(
    dashboard: Dashboard, direct: asyncpg.Connection
) -> None:
    mine = await insert(direct, payload={"domain": "a.test", "tenant_id": "t1"})
    theirs = await insert(direct, payload={"domain": "a.test", "tenant_id": "t2"})
    dashboard.scope = Scope(tenant_id="t1", admin=False, key_id=1)
    _, confirm = await dashboard.get("/jobs/bulk?action=cancel&tenant=t2")  # ignored: not admin
    assert '<strong id="bulk-count">1</strong>' in confirm
    fields = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', confirm))
    await dashboard.post("/jobs/bulk", fields)
    statuses = dict(await direct.fetch("SELECT id, status FROM jobs"))
    assert statuses == {mine: "cancelled", theirs: "pending"}


async def test_job_page_shows_status_url_count_and_tree_and_hides_other_tenants(
    dashboard: Dashboard, direct: asyncpg.Connection
) -> None:
    job = await insert(
        direct,
        status="completed",
        payload={"domain": "site.test", "tenant_id": "t1"},
        result=json.dumps({"url_count": 2, "sitemap_count": 2}),
    )
    index = await direct.fetchval(
        "INSERT INTO sitemap_files (job_id, url, kind, status, http_status, url_count) "
        "VALUES ($1, 'http://site.test/sitemap.xml', 'index', 'ok', 200, 0) RETURNING id",
        job,
    )
    child = await direct.fetchval(
        "INSERT INTO sitemap_files (job_id, url, parent_id, depth, kind, status, http_status, error, url_count) "
        "VALUES ($1, 'http://site.test/a.xml', $2, 1, 'urlset', 'error', 500, '<b>bad</b>', 2) RETURNING id",
        job,
        index,
    )
    await direct.execute(
        "INSERT INTO sitemap_urls (job_id, sitemap_file_id, loc, lastmod, images) VALUES "
        "($1, $2, 'http://site.test/p1', '2026-01-02T00:00:00Z', '[{\"loc\": \"i.png\"}]'), "
        "($1, $2, 'javascript:alert(1)', NULL, NULL)",
        job,
        child,
    )
    status, page = await dashboard.get(f"/jobs/{job}")
    assert status == 200
    assert '<span class="status completed">completed</span>' in page
    assert '<dd id="url-count">2</dd>' in page
    assert f'<li class="file" data-file="{index}"><details>' in page
    assert "&lt;b&gt;bad&lt;/b&gt;" in page and "<b>bad</b>" not in page
    assert 'href="javascript:' not in page
    assert '<span class="badge">image</span>' in page
    assert f"/api/v3/sitemap/jobs/{job}/urls?format=csv" in page
    dashboard.scope = Scope(tenant_id="t2", admin=False, key_id=2)
    status, page = await dashboard.get(f"/jobs/{job}")
    assert status == 404 and "was not found" in page
    status, _, _ = await dashboard.post(f"/jobs/{job}/cancel", {})
    assert status == 404
    status, _ = await dashboard.get("/jobs/abc")
    assert status == 404


async def test_submit_validates_like_the_api_and_lands_on_the_job(
    dashboard: Dashboard, direct: asyncpg.Connection
) -> None:
    dashboard.scope = Scope(tenant_id="t1", admin=False, key_id=1, home_tenant="t1")
    status, _, page = await dashboard.post(
        "/submit/scan", {"domain": "not a domain", "max_urls": ""}
    )
    assert status == 422 and "domain" in page
    assert await direct.fetchval("SELECT count(*) FROM jobs") == 0
    status, location, _ = await dashboard.post(
        "/submit/scan", {"domain": "example.com", "max_urls": "50"}
    )
    assert status == 303
    job = int(location.rsplit("/", 1)[1])
    row = await direct.fetchrow("SELECT job_type, tenant_id, payload FROM jobs WHERE id = $1", job)
    assert row["job_type"] == "sitemap_scan" and row["tenant_id"] == "t1"
    assert json.loads(row["payload"])["max_urls"] == 50
    status, location, _ = await dashboard.post("/submit/batch", {"domains": "a.test\n\nb.test\n"})
    assert status == 303
    batch = int(location.rsplit("/", 1)[1])
    payload = json.loads(await direct.fetchval("SELECT payload FROM jobs WHERE id = $1", batch))
    assert payload["domains"] == ["a.test", "b.test"]


async def test_a_read_only_key_sees_everything_and_is_offered_no_action(
    dashboard: Dashboard, direct: asyncpg.Connection
) -> None:
    job = await insert(
        direct, status="failed", error="x", payload={"domain": "a.test", "tenant_id": "t1"}
    )
    dashboard.scope = Scope(tenant_id="t1", admin=False, read_only=True, key_id=3)
    status, page = await dashboard.get(f"/jobs/{job}")
    assert status == 200
    assert re.search(r'<button type="submit" id="retry-button" class=""\s+disabled', page)
    status, page = await dashboard.get("/jobs?status=failed")
    assert status == 200 and "Retry all matching" not in page and "Read-only" in page
    status, _ = await dashboard.get("/jobs/bulk?action=retry&status=failed")
    assert status == 403
    _, page = await dashboard.get("/submit")
    assert 'id="scan-submit" disabled' in page
