"""Recurring scans without cron (issue 19): the schedule's trigger and tick against a real
PostgreSQL, with several schedulers at once, and the worker's own tick."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import timedelta

from worker import connections
from worker.domains.schedule import enqueue_due, run_schedule


async def due_domains(direct, n: int, interval: str = "1 minute", tenant: str | None = None):
    await direct.execute(
        "INSERT INTO domains (tenant_id, domain, rescan_interval)"
        " SELECT $3, 'site-' || i || '.test', $2::text::interval FROM generate_series(1, $1) i",
        n,
        interval,
        tenant,
    )
    await direct.execute("UPDATE domains SET next_scan_at = now() - interval '1 second'")


async def test_setting_an_interval_from_sql_schedules_the_domain_jittered(direct):
    await direct.execute(
        "INSERT INTO domains (domain) SELECT 'd' || i || '.test' FROM generate_series(1, 1000) i"
    )
    assert await direct.fetchval("SELECT count(next_scan_at) FROM domains") == 0
    await direct.execute("UPDATE domains SET rescan_interval = '1 day'")
    spread = await direct.fetchrow(
        "SELECT min(next_scan_at) - now() AS first, max(next_scan_at) - now() AS last,"
        "       count(DISTINCT date_trunc('second', next_scan_at)) AS seconds FROM domains"
    )
    # never scanned: due now, spread over up to ten minutes, not all in one second
    assert spread["first"] >= timedelta(0) and spread["last"] <= timedelta(minutes=10, seconds=1)
    assert spread["seconds"] > 100
    await direct.execute("UPDATE domains SET rescan_interval = NULL WHERE domain = 'd1.test'")
    assert (
        await direct.fetchval("SELECT next_scan_at FROM domains WHERE domain = 'd1.test'") is None
    )
    # a statement that sets next_scan_at itself keeps it
    await direct.execute(
        "UPDATE domains SET rescan_interval = '2 days', next_scan_at = '2030-01-01Z'"
        " WHERE domain = 'd2.test'"
    )
    assert (
        await direct.fetchval(
            "SELECT next_scan_at::date::text FROM domains WHERE domain = 'd2.test'"
        )
        == "2030-01-01"
    )


async def test_concurrent_schedulers_enqueue_each_due_domain_once(direct, pool, settings):
    await due_domains(direct, 300)
    results = await asyncio.gather(*(enqueue_due(pool, settings, limit=50) for _ in range(6)))
    while any(len(r) == 50 for r in results):  # a backlog is taken in steps
        results = [
            *results,
            *await asyncio.gather(*(enqueue_due(pool, settings) for _ in range(4))),
        ]
        if not any(len(r) for r in results[-4:]):
            break
    jobs = [j for r in results for j in r]
    assert len(jobs) == len(set(jobs)) == 300
    per_domain = await direct.fetch(
        "SELECT domain_id, count(*) AS n FROM domain_scan_jobs GROUP BY 1 HAVING count(*) <> 1"
    )
    assert per_domain == []
    # the next due time moved on by the interval, jittered by at most a tenth of it
    moved = await direct.fetchrow(
        "SELECT min(next_scan_at - now()) AS lo, max(next_scan_at - now()) AS hi FROM domains"
    )
    assert timedelta(seconds=55) < moved["lo"] and moved["hi"] <= timedelta(seconds=67)
    assert await enqueue_due(pool, settings) == []  # nothing due any more
    payloads = {r["p"] for r in await direct.fetch("SELECT payload->>'domain' AS p FROM jobs")}
    assert len(payloads) == 300


async def test_no_recurring_scan_while_one_is_pending_or_running(direct, pool, settings):
    await due_domains(direct, 2, tenant="acme")
    [first, second] = await direct.fetch("SELECT id, domain FROM domains ORDER BY id")
    # a scan of the first domain is running (linked), one of the second is pending (by name)
    running = await direct.fetchval(
        "INSERT INTO jobs (job_type, payload, status) VALUES"
        " ('sitemap_scan', $1::jsonb, 'processing') RETURNING id",
        json.dumps({"domain": first["domain"], "tenant_id": "acme"}),
    )
    await direct.execute(
        "UPDATE domains SET active_job_id = $1 WHERE id = $2", running, first["id"]
    )
    await direct.execute(
        "INSERT INTO jobs (job_type, payload) VALUES ('sitemap_scan', $1::jsonb)",
        json.dumps({"domain": "https://" + second["domain"], "tenant_id": "acme"}),
    )
    assert await enqueue_due(pool, settings) == []
    later = await direct.fetchval("SELECT min(next_scan_at) - now() FROM domains")
    assert later > timedelta(seconds=55)  # its due time moved on: not asked again each tick
    # another tenant's pending scan of the same name does not hold this one back
    await direct.execute("UPDATE domains SET next_scan_at = now() WHERE id = $1", second["id"])
    await direct.execute('UPDATE jobs SET payload = payload || \'{"tenant_id": "other"}\'')
    [job] = await enqueue_due(pool, settings)
    payload = json.loads(await direct.fetchval("SELECT payload::text FROM jobs WHERE id = $1", job))
    assert payload == {"domain": second["domain"], "tenant_id": "acme"}


async def test_each_worker_ticks_the_schedule_until_it_stops(direct, pool, settings):
    await due_domains(direct, 20)
    stopping = asyncio.Event()
    ticks = [
        asyncio.create_task(run_schedule(pool, settings, stopping, every=0.05)) for _ in range(3)
    ]
    deadline = asyncio.get_running_loop().time() + 20
    while await direct.fetchval("SELECT count(*) FROM jobs") < 20:
        assert asyncio.get_running_loop().time() < deadline, "the schedule enqueued nothing"
        await asyncio.sleep(0.05)
    stopping.set()
    await asyncio.wait_for(asyncio.gather(*ticks), 5)
    assert await direct.fetchval("SELECT count(*) FROM jobs") == 20


async def test_a_tick_survives_a_database_error(direct, urls, settings, caplog):
    caplog.set_level(logging.INFO, logger="worker.domains.schedule")
    pool = await connections.create_pool(urls.work, settings, size=2)
    try:
        await direct.execute(
            "ALTER FUNCTION sitemap_worker_enqueue_due_scans(integer) RENAME TO gone"
        )
        stopping = asyncio.Event()
        task = asyncio.create_task(run_schedule(pool, settings, stopping, every=0.05))
        try:
            deadline = asyncio.get_running_loop().time() + 10
            while "the schedule's tick failed" not in caplog.text:
                assert asyncio.get_running_loop().time() < deadline, "no failing tick logged"
                await asyncio.sleep(0.02)
            assert not task.done()  # it logged and goes on
            await direct.execute(
                "ALTER FUNCTION gone(integer) RENAME TO sitemap_worker_enqueue_due_scans"
            )
            await due_domains(direct, 1)
            deadline = asyncio.get_running_loop().time() + 10
            while not await direct.fetchval("SELECT count(*) FROM jobs"):
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.05)
        finally:
            stopping.set()
            await asyncio.wait_for(task, 5)
    finally:
        await pool.close()
    assert "the schedule runs again" in caplog.text
