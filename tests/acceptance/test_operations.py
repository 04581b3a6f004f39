"""Operating a running worker: its metrics scraped over HTTP, its health check, JSON logs."""

from __future__ import annotations

import asyncio
import json
import re

import aiohttp
import asyncpg
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import TEMPLATE, admin_dsn
from tests.support.processes import process_env, worker_command
from tests.support.sites import Site, free_port

NS = 'xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"'


async def scrape(port: int, path: str = "/metrics") -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}{path}") as resp,
    ):
        return resp.status, await resp.text()


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(found: dict, name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


async def health(env: dict[str, str], *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *worker_command(),
        "health",
        *args,
        env=process_env(env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    return proc.returncode, (out + err).decode().strip()


async def test_metrics_endpoint_reports_jobs_fetches_queue_and_listener(spawn, direct, watcher):
    port = free_port()
    worker = await spawn("run", WORKER_METRICS_PORT=str(port), WORKER_ALLOW_PRIVATE_NETWORKS="true")
    async with Site() as site:
        o = site.origin
        urls = "".join(f"<url><loc>{o}/p{i}</loc></url>" for i in range(5))
        sitemap = f"<urlset {NS}>{urls}</urlset>"
        site.add("/robots.txt", f"Sitemap: {o}/sitemap.xml\n")
        site.add("/sitemap.xml", sitemap)
        ids = [
            await direct.fetchval(
                "INSERT INTO jobs (job_type, payload) VALUES ($1, $2::jsonb) RETURNING id", t, p
            )
            for t, p in [
                ("noop", "{}"),
                ("noop", "{}"),
                ("noop", '{"seconds": "x"}'),
                ("sitemap_scan", json.dumps({"domain": o})),
            ]
        ]
        await watcher.wait_for(ids, ("completed", "failed"))
    await direct.execute(
        "INSERT INTO jobs (job_type, run_at) VALUES ('noop', now() + interval '1 hour')"
    )
    # The last outcome is logged after its status commits; counters are bumped before that.
    await worker.wait_for_line(rf"job {ids[-1]} sitemap_scan completed")
    status, text = await scrape(port)
    assert status == 200
    found = samples(text)
    assert value(found, "sitemap_worker_jobs_claimed_total", job_type="noop") == 3
    assert value(found, "sitemap_worker_jobs_completed_total", job_type="noop") == 2
    assert value(found, "sitemap_worker_jobs_failed_total", job_type="noop") == 1
    assert value(found, "sitemap_worker_jobs_completed_total", job_type="sitemap_scan") == 1
    assert value(found, "sitemap_worker_pickup_latency_seconds_count") == 4
    assert (
        value(
            found,
            "sitemap_worker_job_duration_seconds_count",
            job_type="sitemap_scan",
            outcome="completed",
        )
        == 1
    )
    assert value(found, "sitemap_worker_urls_stored_total") == 5
    assert value(found, "sitemap_worker_fetches_total", outcome="ok") == 2  # robots + sitemap
    assert value(found, "sitemap_worker_fetched_bytes_total") >= len(sitemap)
    assert value(found, "sitemap_worker_queue_jobs", status="scheduled") == 1
    assert value(found, "sitemap_worker_queue_jobs", status="processing") == 0
    assert value(found, "sitemap_worker_listener_up") == 1
    assert value(found, "sitemap_worker_listener_state", state="listening") == 1
    assert value(found, "sitemap_worker_jobs_running") == 0
    status, body = await scrape(port, "/health")
    assert status == 200 and json.loads(body)["status"] == "ok"


async def test_health_command_checks_database_and_worker(spawn, worker_env, pg_server, database):
    code, line = await health(worker_env)
    assert (code, line) == (0, "ok: database reachable")

    port = free_port()
    worker = await spawn("run", WORKER_METRICS_PORT=str(port))
    code, line = await health(worker_env, "--worker", f"http://127.0.0.1:{port}")
    assert code == 0 and "worker http://127.0.0.1:" in line and "healthy" in line, line

    # The listener loses its connection and cannot get back in: the worker is unhealthy
    # (it still polls), and the body says why.
    admin = await asyncpg.connect(admin_dsn(pg_server))
    try:
        await admin.execute(f"ALTER DATABASE {database} ALLOW_CONNECTIONS false")
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = $1 AND application_name = 'sitemap-worker-listener'",
            database,
        )
        await worker.wait_for_line("listener lost")
        status, body = await scrape(port, "/health")
        assert status == 503 and "listener reconnecting" in json.loads(body)["problems"]
        # The health command itself needs a database it may connect to: the test template.
        code, line = await health(
            {**worker_env, "DATABASE_URL": admin_dsn(pg_server, TEMPLATE)},
            "--worker",
            f"http://127.0.0.1:{port}",
        )
        assert code == 1 and "listener reconnecting" in line, line
    finally:
        await admin.execute(f"ALTER DATABASE {database} ALLOW_CONNECTIONS true")
        await admin.close()
    await worker.wait_for_line("listener reconnected")
    assert (await scrape(port, "/health"))[0] == 200

    await worker.stop()
    code, line = await health(worker_env, "--worker", f"http://127.0.0.1:{port}")
    assert code == 1 and "unreachable" in line, line


async def test_health_command_fails_clearly_when_database_is_unreachable(worker_env):
    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    code, line = await health({**worker_env, "DATABASE_URL": dead}, "--timeout", "3")
    assert code == 1 and line.startswith("unhealthy: database: "), line


async def test_json_logs_are_one_object_per_line_and_job_lines_carry_the_id(spawn, direct, watcher):
    worker = await spawn("run", WORKER_LOG_FORMAT="json", WORKER_ALLOW_PRIVATE_NETWORKS="true")
    async with Site() as site:
        site.add("/robots.txt", "", status=500)  # the scan logs about it from the job's task
        ids = [
            await direct.fetchval(
                "INSERT INTO jobs (job_type, payload) VALUES ($1, $2::jsonb) RETURNING id", t, p
            )
            for t, p in [
                ("noop", "{}"),
                ("noop", "[]"),
                ("sitemap_scan", json.dumps({"domain": site.origin})),
            ]
        ]
        await watcher.wait_for(ids, ("completed", "failed"))
        await worker.wait_for_line(rf'"job {ids[-1]} sitemap_scan (completed|failed)')
    await worker.stop()
    entries = [json.loads(line) for line in worker.lines]  # every line parses
    assert all({"ts", "level", "logger", "message"} <= e.keys() for e in entries)
    about_jobs = [e for e in entries if re.search(r"\bjob \d+", e["message"])]
    assert len(about_jobs) >= 6  # a start and an end line per job
    for entry in about_jobs:
        named = int(re.search(r"\bjob (\d+)", entry["message"]).group(1))
        assert entry["job_id"] == named, entry
    # Every line written while a job ran carries its id, even lines that do not say it.
    in_jobs = [e for e in entries if e.get("job_id") in ids]
    assert {e["job_id"] for e in in_jobs} == set(ids)
    assert any(not re.search(r"\bjob \d+", e["message"]) for e in in_jobs), in_jobs
