"""`sitemap-worker scan` as a user runs it, against a real site on 127.0.0.1."""

from __future__ import annotations

import asyncio
import sys

from tests.support.processes import process_env, worker_command
from tests.support.sites import Site

NS = 'xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"'


async def run_scan(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *worker_command(),
        "scan",
        *args,
        env=process_env(env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode, out.decode(), err.decode()


async def test_scan_prints_result_and_tree(worker_env):
    async with Site() as site:
        o = site.origin
        site.add("/robots.txt", f"Sitemap: {o}/index.xml\n")
        site.add(
            "/index.xml",
            f"<sitemapindex {NS}><sitemap><loc>{o}/a.xml</loc></sitemap>"
            f"<sitemap><loc>{o}/gone.xml</loc></sitemap></sitemapindex>",
        )
        site.add(
            "/a.xml",
            f"<urlset {NS}><url><loc>{o}/p1</loc></url><url><loc>{o}/p2</loc></url></urlset>",
        )
        code, out, err = await run_scan({**worker_env, "WORKER_ALLOW_PRIVATE_NETWORKS": "true"}, o)
    assert code == 0, err
    assert "completed" in out and '"url_count": 2' in out and '"sitemap_count": 3' in out
    assert f"{o}/index.xml  [index]" in out
    assert f"    {o}/a.xml  [urlset] 2 urls" in out
    assert f"{o}/gone.xml  [?] 0 urls  ERROR HTTP 404" in out


async def test_scan_exits_non_zero_when_the_job_fails(worker_env):
    async with Site() as site:  # the SSRF guard is on: loopback is refused
        code, out, _ = await run_scan(worker_env, site.origin)
    assert code == 1
    assert "failed" in out and "loopback" in out


async def test_bench_scan_runs_end_to_end_on_small_files(worker_env):
    proc = await asyncio.create_subprocess_exec(
        *worker_command(),
        "bench",
        "scan",
        "--scan-files",
        "2",
        "--scan-urls",
        "300",
        env=process_env(worker_env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    text = out.decode()
    assert proc.returncode == 0, text + err.decode()[-2000:]
    assert "600 URLs stored" in text and "every URL exactly once" in text
    assert "x bare lxml" in text and "peak RSS" in text


# A worker whose task dies with an ordinary exception, as a bug in it would: `scan` runs
# the real command in a real process against the real database; only `serve` is replaced.
CRASHING_WORKER = """
import sys
import worker.runner

async def serve(*args, **kwargs):
    raise RuntimeError("worker bug: serve crashed")

worker.runner.serve = serve
from worker.cli import main
sys.exit(main(sys.argv[1:]))
"""


async def test_scan_exits_when_its_worker_dies_instead_of_waiting_forever(worker_env):
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CRASHING_WORKER,
        "scan",
        "http://127.0.0.1:9",
        env=process_env(worker_env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 1, err.decode()
    # Not one of the known failures: a bug keeps its traceback, so it can be found.
    assert "RuntimeError: worker bug: serve crashed" in err.decode()
