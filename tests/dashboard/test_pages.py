"""The dashboard's pages over real HTTP and a real database: what each shows, escaping, and
that a tenant never sees another tenant's jobs."""

from __future__ import annotations

import json

import asyncpg

from tests.dashboard.conftest import Dashboard
from worker.api.scope import Scope


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
