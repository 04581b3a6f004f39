"""Peak memory of a real `sitemap-worker scan` process fed hostile and huge sitemaps."""

from __future__ import annotations

import asyncio
import gzip
import io
import re
import sys

from tests.support.processes import process_env, worker_command
from tests.support.sites import Site

NS = 'xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"'
LIMIT_MIB = 200


def gzip_bomb() -> bytes:
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=9) as gz:
        zeros = bytes(1 << 20)
        for _ in range(1024):  # 1 GiB of zeros
            gz.write(zeros)
    return out.getvalue()


def big_sitemap(origin: str, megabytes: int) -> bytes:
    """About `megabytes` MB of plain URLs: past the 50 MB cap."""
    entry = (
        f"<url><loc>{origin}/some/long/path/for/a/page/number-{{}}?with=query&amp;x=1</loc></url>"
    )
    count = megabytes * 1024 * 1024 // (len(entry) + 3)
    body = "".join(entry.format(i) for i in range(count))
    return f"<urlset {NS}>{body}</urlset>".encode()


async def test_peak_rss_stays_bounded_on_hostile_sitemaps(worker_env):
    async with Site() as site:
        o = site.origin
        site.add(
            "/sitemap_index.xml",
            f"<sitemapindex {NS}>"
            + "".join(
                f"<sitemap><loc>{o}/{name}</loc></sitemap>"
                for name in ("big.xml", "bomb.xml.gz", "endless.xml")
            )
            + "</sitemapindex>",
        )
        site.add("/big.xml", big_sitemap(o, 60))
        site.add("/bomb.xml.gz", gzip_bomb())
        site.stream("/endless.xml", f"<urlset {NS}>".encode() + b" " * 65536)
        proc = await asyncio.create_subprocess_exec(
            *worker_command(),
            "scan",
            o,
            env=process_env(
                {**worker_env, "WORKER_LOG_LEVEL": "INFO", "WORKER_ALLOW_PRIVATE_NETWORKS": "true"}
            ),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()[-2000:]
    text = out.decode()
    assert "big.xml  [urlset]" in text and "(truncated)" in text
    assert "bomb.xml.gz" in text and "endless.xml" in text and "download cap" in text
    # The worker reports its own peak RSS (VmHWM of its own memory map) as it stops.
    found = re.search(r"peak RSS (\d+) MiB", err.decode())
    assert found, err.decode()[-2000:]
    print(f"peak RSS of the scanning worker process: {found.group(1)} MiB", file=sys.stderr)
    assert int(found.group(1)) < LIMIT_MIB
