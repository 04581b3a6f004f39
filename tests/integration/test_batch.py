"""sitemap_batch: fan-out into child scans, finished by the database when the last ends."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.support.sites import Site
from worker.database_urls import Urls
from worker.engine import JobLoop
from worker.jobs import default_registry

NS = 'xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"'


@pytest.fixture
def urls(direct_dsn: str) -> Urls:
    return Urls(direct_dsn, direct_dsn)


async def run_burst(pool, settings, concurrency: int = 1) -> None:
    worker = JobLoop(pool, settings, default_registry(), concurrency=concurrency, burst=True)
    await asyncio.wait_for(worker.run(), 60)


async def insert_batch(direct, domains: list[str], **extra) -> int:
    return await direct.fetchval(
        "INSERT INTO jobs (job_type, payload) VALUES ('sitemap_batch', $1::jsonb) RETURNING id",
        json.dumps({"domains": domains, **extra}),
    )


async def test_batch_fans_out_and_one_failure_fails_only_its_domain(pool, make_settings, direct):
    async with Site() as a, Site() as b:
        for site, n in ((a, 3), (b, 2)):
            body = "".join(f"<url><loc>{site.origin}/p{i}</loc></url>" for i in range(n))
            site.add("/sitemap.xml", f"<urlset {NS}>{body}</urlset>")
        batch = await insert_batch(
            direct, [a.origin, b.origin, "ftp://not-a-site", a.origin], tenant_id="t1"
        )
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
    await direct.execute(
        "INSERT INTO jobs (job_type, payload, parent_id) VALUES"
        " ('sitemap_scan', '{\"domain\": \"a.example\"}', $1),"
        " ('sitemap_scan', '{\"domain\": \"b.example\"}', $1)",
        batch,
    )
    await direct.execute("UPDATE jobs SET status = 'cancelled' WHERE id = $1", batch)
    statuses = await direct.fetch("SELECT status FROM jobs WHERE parent_id = $1", batch)
    assert [r["status"] for r in statuses] == ["cancelled", "cancelled"]
    # The children ending must not 'complete' a cancelled batch.
    assert await direct.fetchval("SELECT status FROM jobs WHERE id = $1", batch) == "cancelled"


async def test_a_retried_batch_adds_no_second_set_of_children(pool, settings, direct):
    batch = await insert_batch(direct, ["a.example", "b.example"])
    await direct.execute(
        "INSERT INTO jobs (job_type, payload, parent_id, status) VALUES"
        " ('noop', '{}', $1, 'pending')",
        batch,
    )  # left by an earlier attempt
    await run_burst(pool, settings)
    assert await direct.fetchval("SELECT count(*) FROM jobs WHERE parent_id = $1", batch) == 1
    assert await direct.fetchval("SELECT status FROM jobs WHERE id = $1", batch) == "completed"


@pytest.mark.parametrize(
    "payload, message",
    [
        ({"domains": []}, "domains: List should have at least 1 item"),
        ({"domains": "a.com"}, "domains: Input should be a valid list"),
        ({"domain": "a.com"}, "domains: Field required"),
    ],
)
async def test_invalid_batch_payload_fails_clearly(pool, settings, direct, payload, message):
    job_id = await direct.fetchval(
        "INSERT INTO jobs (job_type, payload) VALUES ('sitemap_batch', $1::jsonb) RETURNING id",
        json.dumps(payload),
    )
    await run_burst(pool, settings)
    row = await direct.fetchrow("SELECT status, error FROM jobs WHERE id = $1", job_id)
    assert row["status"] == "failed" and message in row["error"]


async def ended_batch(direct, children: list[str]) -> tuple[int, list[int]]:
    """A batch its children have completed, as the database leaves it: noop children, each
    run once, ended in `children`'s statuses by one statement."""
    batch = await insert_batch(direct, [f"d{i}.example" for i in range(len(children))])
    await direct.execute("UPDATE jobs SET status = 'processing', attempts = 1 WHERE id = $1", batch)
    ids = [
        r["id"]
        for r in await direct.fetch(
            "INSERT INTO jobs (job_type, payload, parent_id, status, attempts)"
            " SELECT 'noop', '{}', $1, 'processing', 1 FROM generate_series(1, $2) ORDER BY 1"
            " RETURNING id",
            batch,
            len(children),
        )
    ]
    await direct.execute(
        "UPDATE jobs j SET status = u.s, error = CASE WHEN u.s = 'failed' THEN 'boom' END"
        "  FROM unnest($1::bigint[], $2::text[]) AS u (id, s) WHERE j.id = u.id",
        ids,
        children,
    )
    assert await direct.fetchval("SELECT status FROM jobs WHERE id = $1", batch) == "completed"
    return batch, ids


RETRY = (
    "UPDATE jobs SET status = 'pending', attempts = 0, error = NULL, run_at = now() WHERE id = $1"
)


async def test_a_retried_batch_reruns_its_failed_and_cancelled_children_and_ends(
    pool, settings, direct
):
    batch, (done, failed, cancelled) = await ended_batch(
        direct, ["completed", "failed", "cancelled"]
    )
    kept = await direct.fetchrow("SELECT finished_at, attempts FROM jobs WHERE id = $1", done)
    await direct.execute(RETRY, batch)  # the README's recipe
    await run_burst(pool, settings)
    parent = await direct.fetchrow("SELECT * FROM jobs WHERE id = $1", batch)
    assert (parent["status"], parent["progress"], parent["owner"]) == ("completed", 1, None)
    result = json.loads(parent["result"])
    assert (result["domain_count"], result["completed"], result["failed"]) == (3, 3, 0)
    rows = {
        r["id"]: r for r in await direct.fetch("SELECT * FROM jobs WHERE parent_id = $1", batch)
    }
    assert all(
        rows[i]["status"] == "completed" and rows[i]["attempts"] == 1 for i in (failed, cancelled)
    )
    assert (rows[done]["finished_at"], rows[done]["attempts"]) == (
        kept["finished_at"],
        kept["attempts"],
    )


async def test_a_retried_batch_with_nothing_to_rerun_completes_at_once_alike(
    pool, settings, direct
):
    batch, _ = await ended_batch(direct, ["completed", "completed"])
    before = json.loads(await direct.fetchval("SELECT result FROM jobs WHERE id = $1", batch))
    await direct.execute(RETRY, batch)
    await run_burst(pool, settings)
    row = await direct.fetchrow("SELECT status, result, finished_at FROM jobs WHERE id = $1", batch)
    assert row["status"] == "completed" and row["finished_at"] is not None
    assert json.loads(row["result"]) == before


async def test_domains_count_once_as_the_scan_sees_them_and_bad_entries_fail_alone(
    pool, make_settings, direct
):
    async with Site() as site:
        site.add("/sitemap.xml", f"<urlset {NS}><url><loc>{site.origin}/p</loc></url></urlset>")
        upper = site.origin.replace("http://", "HTTP://")
        batch = await insert_batch(
            direct,
            [
                upper,
                site.origin,
                site.origin + "/",
                f" {site.origin} ",
                5,
                None,
                "ftp://x.example",
                5,
            ],
        )
        await run_burst(pool, make_settings(allow_private_networks=True))
    parent = await direct.fetchrow("SELECT * FROM jobs WHERE id = $1", batch)
    children = await direct.fetch("SELECT * FROM jobs WHERE parent_id = $1 ORDER BY id", batch)
    assert parent["status"] == "completed"
    assert [json.loads(c["payload"])["domain"] for c in children] == [
        upper,
        5,
        None,
        "ftp://x.example",
    ]
    assert [c["status"] for c in children] == ["completed", "failed", "failed", "failed"]
    assert [c["attempts"] for c in children] == [1, 0, 0, 0]  # the bad ones never ran
    result = json.loads(parent["result"])
    assert (result["domain_count"], result["completed"], result["failed"], result["url_count"]) == (
        4,
        1,
        3,
        1,
    )
    errors = [d["error"] for d in result["domains"][1:]]
    assert "domain must be a string, got int" in errors[0] and "got NoneType" in errors[1]
    assert "unsupported scheme 'ftp'" in errors[2]
    assert [d["domain"] for d in result["domains"]] == [upper, 5, None, "ftp://x.example"]


async def test_a_batch_of_only_bad_entries_completes_at_once(pool, settings, direct):
    batch = await insert_batch(direct, [[], "", {"a": 1}])
    await run_burst(pool, settings)
    row = await direct.fetchrow("SELECT * FROM jobs WHERE id = $1", batch)
    assert (row["status"], row["progress"], row["owner"]) == ("completed", 1, None)
    result = json.loads(row["result"])
    assert (result["domain_count"], result["failed"]) == (3, 3)
    assert "domain is empty" in result["domains"][1]["error"]
