"""The real `sitemap-worker` process: `api-key create|list|revoke`, and `serve
--with-worker` printing its address, scanning a local site submitted with the new key,
and stopping on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys

import aiohttp
import pytest

from tests.api.test_api_smoke import add_sitemap

pytestmark = pytest.mark.parametrize("urls", ["direct"], indirect=True)


def cli(urls, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker", *args],
        env={**os.environ, "DATABASE_URL": urls.work},
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_api_key_commands_and_serve_with_worker(urls, site):
    made = cli(urls, "api-key", "create", "--tenant", "acme", "--name", "ci")
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip().splitlines()[-1]
    assert key.startswith("swk_") and len(key) > 40
    listed = cli(urls, "api-key", "list")
    assert key[:12] in listed.stdout and "acme" in listed.stdout and key not in listed.stdout
    refused = cli(urls, "api-key", "create")
    assert refused.returncode == 2 and "--tenant" in refused.stderr

    add_sitemap(site)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "worker", "serve", "--port", "0", "--with-worker", "--no-migrate",
        env={**os.environ, "DATABASE_URL": urls.work, "WORKER_ALLOW_PRIVATE_NETWORKS": "true"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        match = re.search(r"serving on (http://127\.0\.0\.1:\d+/)", line)
        assert match, line
        base = match.group(1).rstrip("/")
        auth = {"Authorization": f"Bearer {key}"}
        async with aiohttp.ClientSession(headers=auth) as http:
            async with http.post(
                f"{base}/api/v3/sitemap/scan", json={"domain": site.url("/")}
            ) as r:
                assert r.status == 202
                job = await r.json()
            async with asyncio.timeout(30):
                while True:
                    async with http.get(base + job["status_url"]) as r:
                        body = await r.json()
                    if body["status"] in ("completed", "failed"):
                        break
                    await asyncio.sleep(0.05)
            assert body["status"] == "completed" and body["result"]["url_count"] == 3, body
            revoked = cli(urls, "api-key", "revoke", key[:12])
            assert revoked.returncode == 0 and "revoked" in revoked.stdout
            async with http.get(base + job["status_url"]) as r:
                assert r.status == 401
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err
    again = cli(urls, "api-key", "revoke", key[:12])
    assert again.returncode == 0 and "already" in again.stdout
    missing = cli(urls, "api-key", "revoke", "swk_nothing")
    assert missing.returncode == 1 and "no key" in missing.stderr
