"""Keys and tenants: another tenant's job answers 404 exactly like a missing one on every
per-job route, lists show only the caller's jobs, an admin sees all, a read-only key
changes nothing, the keyless server is open only on loopback, session cookies are signed,
expire, end with their key and need a same-origin browser for changes."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest

from worker.api.auth import COOKIE_NAME, SESSION_SECRET, session_cookie_value
from worker.api.keys import create_key
from worker.api.serve import refusal

SCAN = "/api/v3/sitemap/scan"
MISSING = 9_000_000


def per_job_routes(job_id: int) -> list[tuple[str, str]]:
    return [
        ("GET", f"/api/v3/sitemap/status/{job_id}"),
        ("GET", f"/api/v3/jobs/{job_id}"),
        ("POST", f"/api/v3/jobs/{job_id}/cancel"),
        ("POST", f"/api/v3/jobs/{job_id}/retry"),
        ("GET", f"/api/v3/sitemap/jobs/{job_id}/sitemaps"),
        ("GET", f"/api/v3/sitemap/jobs/{job_id}/urls"),
        ("GET", f"/api/v3/sitemap/jobs/{job_id}/urls?format=csv"),
    ]


async def test_another_tenants_job_is_missing_on_every_route(api, make_key, direct):
    a, b, admin = await make_key("tenant", "a"), await make_key("tenant", "b"), None
    admin = await make_key("admin")
    code, job = await api.json("POST", SCAN, {"domain": "a.example"}, key=a)
    assert code == 202
    assert await direct.fetchval("SELECT tenant_id FROM jobs WHERE id = $1", job["job_id"]) == "a"
    code, body = await api.json("POST", SCAN, {"domain": "b.example", "tenant_id": "a"}, key=b)
    assert code == 422 and body["details"][0]["loc"] == ["body", "tenant_id"]
    for (method, theirs), (_, missing) in zip(
        per_job_routes(job["job_id"]), per_job_routes(MISSING), strict=True
    ):
        async with (
            api.request(method, theirs, key=b) as r1,
            api.request(method, missing, key=b) as r2,
        ):
            assert (r1.status, await r1.json()) == (r2.status, await r2.json()), theirs
            assert r1.status == 404, theirs
    code, page = await api.json("GET", "/api/v3/jobs", key=b)
    assert page["jobs"] == []
    code, page = await api.json("GET", "/api/v3/jobs", key=a)
    assert [j["job_id"] for j in page["jobs"]] == [job["job_id"]]
    await api.json("POST", SCAN, {"domain": "b.example"}, key=b)
    code, page = await api.json("GET", "/api/v3/jobs", key=admin)
    assert sorted(j["tenant_id"] for j in page["jobs"]) == ["a", "b"]
    code, body = await api.json("GET", f"/api/v3/jobs/{job['job_id']}", key=admin)
    assert code == 200 and body["tenant_id"] == "a"
    # b's cancel of a's job changed nothing
    assert (
        await direct.fetchval("SELECT status FROM jobs WHERE id = $1", job["job_id"]) == "pending"
    )


async def test_a_plain_sql_insert_with_a_tenant_is_that_tenants_job(api, make_key, direct):
    a = await make_key("tenant", "a")
    job_id = await direct.fetchval(
        """INSERT INTO jobs (job_type, payload) VALUES ('noop', '{"tenant_id": "a"}') RETURNING id"""
    )
    code, body = await api.json("GET", f"/api/v3/jobs/{job_id}", key=a)
    assert code == 200 and body["tenant_id"] == "a"


async def test_read_only_key_sees_and_changes_nothing(api, make_key, direct):
    a, ro = await make_key("tenant", "a"), await make_key("read_only", "a")
    code, job = await api.json("POST", SCAN, {"domain": "a.example"}, key=a)
    code, seen = await api.json("GET", job["status_url"], key=ro)
    assert code == 200 and seen["job_id"] == job["job_id"]
    for path in (
        SCAN,
        f"/api/v3/jobs/{job['job_id']}/cancel",
        f"/api/v3/jobs/{job['job_id']}/retry",
    ):
        code, body = await api.json("POST", path, {"domain": "x.example"}, key=ro)
        assert code == 403 and "read-only" in body["error"], path
    assert await direct.fetchval("SELECT count(*) FROM jobs") == 1
    assert await direct.fetchval("SELECT status FROM jobs") == "pending"


async def test_admin_key_with_a_tenant_submits_for_it_and_sees_all(api, make_key, direct):
    admin, b = await make_key("admin", "ops"), await make_key("tenant", "b")
    await api.json("POST", SCAN, {"domain": "b.example"}, key=b)
    _, job = await api.json("POST", SCAN, {"domain": "ops.example"}, key=admin)
    assert await direct.fetchval("SELECT tenant_id FROM jobs WHERE id = $1", job["job_id"]) == "ops"
    _, page = await api.json("GET", "/api/v3/jobs", key=admin)
    assert len(page["jobs"]) == 2


async def test_keys_required_once_one_exists(api, direct):
    code, _ = await api.json("GET", "/api/v3/jobs")
    assert code == 200  # no key in the database, loopback: open
    created = await create_key(direct, "tenant", "a")
    for key in (None, "swk_not-a-key", created.key[:-1]):
        code, body = await api.json("GET", "/api/v3/jobs", key=key)
        assert code == 401 and body["error"], key
    code, _ = await api.json("GET", "/api/v3/jobs", key=created.key)
    assert code == 200
    await direct.execute("UPDATE api_keys SET revoked_at = now()")
    code, _ = await api.json("GET", "/api/v3/jobs", key=created.key)
    assert code == 401
    code, _ = await api.json("GET", "/api/v3/jobs")
    assert code == 401  # a revoked key still closes the keyless mode
    code, health = await api.json("GET", "/api/v3/health")
    assert (code, health) == (200, {"status": "ok", "database": "ok"})


async def test_keyless_server_is_open_only_on_loopback(start_api):
    closed = await start_api(open_on_loopback=False)
    code, _ = await closed.json("GET", "/api/v3/jobs")
    assert code == 401
    opened = await start_api()
    code, _ = await opened.json("GET", "/api/v3/jobs", headers={"Host": "evil.example"})
    assert code == 403  # a rebound name pointing at 127.0.0.1
    code, _ = await opened.json(
        "POST", SCAN, {"domain": "x.example"}, headers={"Sec-Fetch-Site": "cross-site"}
    )
    assert code == 403  # another site's page posting to the open local server


def test_refusal_says_why():
    assert refusal("127.0.0.1", have_keys=False) is None
    assert refusal("::1", have_keys=False) is None
    assert refusal("localhost", have_keys=False) is None
    assert refusal("0.0.0.0", have_keys=True) is None
    for host in ("0.0.0.0", "::", "192.168.1.10", "example.com"):
        assert "no API key" in (refusal(host, have_keys=False) or ""), host


@pytest.mark.parametrize("urls", ["direct"], indirect=True)
async def test_serve_refuses_a_public_host_without_keys(urls):
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "worker",
        "serve",
        "--host",
        "0.0.0.0",
        "--port",
        "0",
        "--no-migrate",
        env={**os.environ, "DATABASE_URL": urls.work},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1, (out, err)
    assert b"sitemap-worker serve: error: refusing to serve on 0.0.0.0 with no API key" in err
    assert b"serving on" not in out


async def test_session_cookie(api, direct):
    key = await create_key(direct, "tenant", "a")
    other = await create_key(direct, "tenant", "b")
    secret = api.app[SESSION_SECRET]
    cookie = {"Cookie": f"{COOKIE_NAME}={session_cookie_value(key.id, secret)}"}
    code, _ = await api.json("GET", "/api/v3/jobs", headers=cookie)
    assert code == 200
    # A change needs a same-origin browser request.
    code, body = await api.json("POST", SCAN, {"domain": "a.example"}, headers=cookie)
    assert code == 403 and "cross-site" in body["error"]
    code, _ = await api.json(
        "POST", SCAN, {"domain": "a.example"}, headers={**cookie, "Origin": "http://evil.example"}
    )
    assert code == 403
    code, _ = await api.json(
        "POST", SCAN, {"domain": "a.example"}, headers={**cookie, "Origin": api.url}
    )
    assert code == 202
    code, _ = await api.json(
        "POST", SCAN, {"domain": "a.example"}, headers={**cookie, "Sec-Fetch-Site": "same-origin"}
    )
    assert code == 202
    # Forged, expired, or for a revoked key: no session.
    forged = session_cookie_value(other.id, b"x" * 32)
    expired = session_cookie_value(key.id, secret, ttl=-1)
    for value in (forged, expired, cookie["Cookie"].split("=", 1)[1][:-2] + "AA"):
        code, _ = await api.json(
            "GET", "/api/v3/jobs", headers={"Cookie": f"{COOKIE_NAME}={value}"}
        )
        assert code == 401, value
    await direct.execute("UPDATE api_keys SET revoked_at = now() WHERE id = $1", key.id)
    code, _ = await api.json("GET", "/api/v3/jobs", headers=cookie)
    assert code == 401
