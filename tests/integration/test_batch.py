"""sitemap_batch: fan-out into child scans, finished by the database when the last ends."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.support.sites import Site
from worker.database import Urls
from worker.engine import Worker
from worker.jobs import default_registry

NS = 'xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"'


@pytest.fixture
def urls(direct_dsn: str) -> Urls:
    return Urls(direct_dsn, direct_dsn)


async def run_burst(pool, settings, concurrency: int = 1) -> None:
    worker = Worker(pool, settings, default_registry(), concurrency=concurrency, burst=True)
    await asyncio.wait_for(worker.run(), 60)


async def insert_batch(direct, domains: list[str], **extra) -> int:
    return await direct.fetchval(
        "INSERT INTO jobs (job_type, payload) VALUES ('sitemap_batch', $1::jsonb) RETURNING id",
        json.dumps({"domains": domains, **extra}))


async def test_batch_fans_out_and_one_failure_fails_only_its_domain(pool, make_settings, direct):
    async with Site() as a, Site() as b:
        for site, n in ((a, 3), (b, 2)):
            body = "".join(f"<url><loc>{site.origin}/p{i}</loc></url>" for i in range(n))
            site.add("/sitemap.xml", f"<urlset {NS}>{body}</urlset>")
        batch = await insert_batch(direct, [a.origin, b.origin, "ftp://not-a-site", a.origin],
                                   tenant_id="t1")
        # One slot: the batch must not hold it while its children run.
        await run_burst(pool, make_settings(allow_private_networks=True), concurrency=1)
    parent = await direct.fetchrow("SELECT * FROM jobs WHERE id = $1", batch)
    children = await direct.fetch("SELECT * FROM jobs WHERE parent_id = $1 ORDER BY id", batch)
    assert parent["status"] == "completed" and parent["progress"] == 1
    assert parent["finished_at"] is not None and parent["owner"] is None
    assert [c["status"] for c in children] == ["completed", "completed", "failed"]  # a.origin once
    assert all(json.loads(c["payload"])["tenant_id"] == "t1" for c in children)
    result = json.loads(parent["result"])
    assert (result["domain_count"], result["completed"], result["failed"]) == (3, 2, 1)
    assert result["url_count"] == 5
    failed = [d for d in result["domains"] if d["status"] == "failed"]
    assert failed[0]["domain"] == "ftp://not-a-site" and "invalid payload" in failed[0]["error"]


async def test_cancelling_a_batch_cancels_its_unfinished_children(pool, settings, direct):
    batch = await insert_batch(direct, ["a.example", "b.example"])
    await direct.execute("UPDATE jobs SET status = 'processing', owner = NULL WHERE id = $1", batch)
    await direct.execute("INSERT INTO jobs (job_type, payload, parent_id) VALUES"
                         " ('sitemap_scan', '{\"domain\": \"a.example\"}', $1),"
                         " ('sitemap_scan', '{\"domain\": \"b.example\"}', $1)", batch)
    await direct.execute("UPDATE jobs SET status = 'cancelled' WHERE id = $1", batch)
    statuses = await direct.fetch("SELECT status FROM jobs WHERE parent_id = $1", batch)
    assert [r["status"] for r in statuses] == ["cancelled", "cancelled"]
    # The children ending must not 'complete' a cancelled batch.
    assert await direct.fetchval("SELECT status FROM jobs WHERE id = $1", batch) == "cancelled"


async def test_a_retried_batch_adds_no_second_set_of_children(pool, settings, direct):
    batch = await insert_batch(direct, ["a.example", "b.example"])
    await direct.execute("INSERT INTO jobs (job_type, payload, parent_id, status) VALUES"
                         " ('noop', '{}', $1, 'pending')", batch)  # left by an earlier attempt
    await run_burst(pool, settings)
    assert await direct.fetchval("SELECT count(*) FROM jobs WHERE parent_id = $1", batch) == 1
    assert await direct.fetchval("SELECT status FROM jobs WHERE id = $1", batch) == "completed"


@pytest.mark.parametrize("payload, message", [
    ({"domains": []}, "domains: List should have at least 1 item"),
    ({"domains": "a.com"}, "domains: Input should be a valid list"),
    ({"domain": "a.com"}, "domains: Field required"),
])
async def test_invalid_batch_payload_fails_clearly(pool, settings, direct, payload, message):
    job_id = await direct.fetchval(
        "INSERT INTO jobs (job_type, payload) VALUES ('sitemap_batch', $1::jsonb) RETURNING id",
        json.dumps(payload))
    await run_burst(pool, settings)
    row = await direct.fetchrow("SELECT status, error FROM jobs WHERE id = $1", job_id)
    assert row["status"] == "failed" and message in row["error"]
