"""`sitemap-worker bench scan`: end-to-end scan speed against bare lxml on the same files.

Files are generated into a temporary folder and served by a local aiohttp server on
127.0.0.1; a real `sitemap-worker run --burst` process scans them into the configured
database. Speed is quoted as a ratio to `lxml.etree.iterparse` over the same files measured
in the same run, since absolute figures on a shared machine are noise.
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import tempfile
import time
from pathlib import Path

from aiohttp import web
from lxml import etree

from tests.benchmarks.statements import bq
from tests.support.processes import WorkerProcess
from worker import connections
from worker.database_urls import Urls
from worker.settings import Settings
from worker.sql import q

NS = "http://www.sitemaps.org/schemas/sitemap/0.9"


def generate(folder: Path, files: int, per_file: int, origin: str) -> int:
    """An index plus `files` urlsets of plain URLs with lastmod; returns the URL count."""
    for f in range(files):
        with open(folder / f"part-{f}.xml", "w", encoding="utf-8") as out:
            out.write(f'<?xml version="1.0" encoding="UTF-8"?>\n<urlset xmlns="{NS}">\n')
            for i in range(per_file):
                out.write(
                    f"<url><loc>https://shop.example/c{f}/product-{i}?ref=s{i % 7}</loc>"
                    f"<lastmod>2026-11-{i % 28 + 1:02d}</lastmod><priority>0.5</priority></url>\n"
                )
            out.write("</urlset>\n")
    entries = "".join(f"<sitemap><loc>{origin}/part-{f}.xml</loc></sitemap>" for f in range(files))
    (folder / "sitemap_index.xml").write_text(
        f'<sitemapindex xmlns="{NS}">{entries}</sitemapindex>'
    )
    (folder / "robots.txt").write_text(f"Sitemap: {origin}/sitemap_index.xml\n")
    return files * per_file


def bare_lxml(folder: Path, files: int, *, read_fields: bool = False) -> tuple[int, float]:
    """The baseline: iterparse on `url` end events, clearing as it goes. With `read_fields`,
    each URL's loc and lastmod texts are also read into Python, the least any sitemap
    reader does with a URL (the strict baseline reads nothing at all)."""
    loc, lastmod = f"{{{NS}}}loc", f"{{{NS}}}lastmod"
    count, began = 0, time.perf_counter()
    for f in range(files):
        for _, element in etree.iterparse(str(folder / f"part-{f}.xml"), tag=f"{{{NS}}}url"):
            count += 1
            if read_fields:
                element.findtext(loc), element.findtext(lastmod)
            element.clear()
            while element.getprevious() is not None:
                del element.getparent()[0]
    return count, time.perf_counter() - began


async def serve_folder(folder: Path) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_static("/", folder)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}"


async def run_worker(urls: Urls) -> tuple[int, str, float]:
    """Exit status, stderr and CPU seconds (user + system) of one burst worker process."""
    before = _children_cpu()
    env = {
        "DATABASE_URL": urls.work,
        "LISTEN_DATABASE_URL": urls.direct,
        "WORKER_ALLOW_PRIVATE_NETWORKS": "true",
    }
    proc = await WorkerProcess.start(env, "run", "--burst", "--no-migrate", "--concurrency", "1")
    code = await proc.wait(timeout=None)  # as long as the scan takes
    return code, proc.log(), _children_cpu() - before


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def run_scan_bench(urls: Urls, settings: Settings, args: argparse.Namespace) -> int:
    files, per_file = args.scan_files, args.scan_urls
    with tempfile.TemporaryDirectory(prefix="sitemap-bench-") as tmp:
        folder = Path(tmp)
        runner, origin = await serve_folder(folder)
        try:
            total = generate(folder, files, per_file, origin)
            size = sum(p.stat().st_size for p in folder.glob("part-*.xml"))
            counted, bare_s = bare_lxml(folder, files)
            _, reading_s = bare_lxml(folder, files, read_fields=True)
            conn = await connections.connect(urls.direct, settings)
            try:
                [row] = await conn.fetch(
                    q("enqueue_many"),
                    "sitemap_scan",
                    [json.dumps({"domain": origin})],
                    0,
                    None,
                    None,
                )
                job_id = row["id"]
                code, log, cpu = await run_worker(urls)
                job = await conn.fetchrow(q("get_job"), job_id)
                stored = await conn.fetchval(bq("scan_stored"), job_id)
                await conn.execute(bq("scan_forget"), job_id)
            finally:
                await conn.close()
        finally:
            await runner.cleanup()
    took = (job["finished_at"] - job["started_at"]).total_seconds()
    peak = re.search(r"peak RSS (\d+) MiB", log)
    bare_rate, scan_rate = counted / bare_s, stored / took if took else 0.0
    reading_rate = counted / reading_s
    print("sitemap-worker bench scan")
    print(
        f"files:     index + {files} x {per_file:,} URLs ({size / 2**20:.1f} MB), served from 127.0.0.1"
    )
    print(
        f"bare lxml: {counted:,} URLs in {bare_s:.2f} s = {bare_rate:,.0f} URLs/s (iterparse, clear)"
    )
    print(
        f"           {counted:,} URLs in {reading_s:.2f} s = {reading_rate:,.0f} URLs/s"
        " (iterparse, clear, reading loc and lastmod)"
    )
    print(
        f"scan job:  {job['status']}, {stored:,} URLs stored in {took:.2f} s (finished_at - started_at)"
        f" = {scan_rate:,.0f} URLs/s"
    )
    print(
        f"ratio:     {scan_rate / bare_rate:.2f}x bare lxml (target >= 0.4x); "
        f"{scan_rate / reading_rate:.2f}x the reading baseline"
    )
    print(f"stored:    {'every URL exactly once' if stored == total else f'{stored} of {total}'}")
    print(
        f"worker:    peak RSS {peak.group(1) if peak else '?'} MiB (target < 150 MiB); "
        f"CPU {cpu:.2f} s (user + system, start-up included); exit {code}"
    )
    return 0 if job["status"] == "completed" and stored == total else 1
