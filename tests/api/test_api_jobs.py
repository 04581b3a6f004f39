"""Cancel a running scan, retry a failed one, batches with each domain's outcome, and keyset
listing with filters: over HTTP, against a real worker and a local site."""

from __future__ import annotations

from tests.api.test_api_smoke import add_sitemap


async def test_cancel_a_running_scan(api, worker, site, direct):
    add_sitemap(site)
    release = site.hold("/robots.txt")
    code, job = await api.json("POST", "/api/v3/sitemap/scan", {"domain": site.url("/")})
    assert code == 202
    await site.arrival("/robots.txt").wait()  # the worker is inside the scan
    running = await api.wait_status(job["status_url"], ("processing",))
    assert running["started_at"] is not None
    code, cancelled = await api.json("POST", f"/api/v3/jobs/{job['job_id']}/cancel")
    assert code == 200, cancelled
    assert cancelled["status"] == "cancelled"
    release.set()
    # Cancelling again is a conflict, not a silent success.
    code, body = await api.json("POST", f"/api/v3/jobs/{job['job_id']}/cancel")
    assert code == 409 and "cancelled" in body["error"]
    # The worker let go of it: no owner, and it stays cancelled.
    row = await direct.fetchrow("SELECT status, owner FROM jobs WHERE id = $1", job["job_id"])
    assert row["status"] == "cancelled"


async def test_retry_a_failed_scan(api, worker, site):
    # robots.txt names a sitemap the site does not have yet: a permanent failure.
    site.add("/robots.txt", f"Sitemap: {site.url('/sitemap.xml')}\n")
    code, job = await api.json("POST", "/api/v3/sitemap/scan", {"domain": site.url("/")})
    failed = await api.wait_status(job["status_url"])
    assert failed["status"] == "failed", failed
    assert failed["error"]
    code, body = await api.json("POST", f"/api/v3/jobs/{job['job_id']}/cancel")
    assert code == 409  # an ended job cannot be cancelled
    add_sitemap(site)  # the site is fixed; run it again
    code, retried = await api.json("POST", f"/api/v3/jobs/{job['job_id']}/retry")
    assert code == 200, retried
    assert retried["attempts"] == 0 and retried["error"] is None
    done = await api.wait_status(job["status_url"])
    assert done["status"] == "completed", done
    assert done["attempts"] == 1 and done["result"]["url_count"] == 3
    code, body = await api.json("POST", f"/api/v3/jobs/{job['job_id']}/retry")
    assert code == 409 and "completed" in body["error"]


async def test_batch_shows_each_domain(api, worker, site):
    add_sitemap(site)
    code, job = await api.json(
        "POST", "/api/v3/sitemap/batch", {"domains": [site.url("/"), site.url("/other")]}
    )
    assert code == 202 and job["status"] == "pending"
    done = await api.wait_status(job["status_url"])
    assert done["job_type"] == "sitemap_batch" and done["status"] == "completed", done
    # one site, two spellings: one child
    children = done["batch"]["children"]
    assert done["batch"]["total"] == len(children) == 1
    assert children[0]["status"] == "completed" and children[0]["url_count"] == 3
    code, child = await api.json("GET", f"/api/v3/jobs/{children[0]['job_id']}")
    assert code == 200 and child["parent_id"] == job["job_id"]


async def test_keyset_listing_newest_first_with_filters(api, direct):
    ids = []
    for n in range(7):
        code, job = await api.json("POST", "/api/v3/sitemap/scan", {"domain": f"s{n % 2}.example"})
        ids.append(job["job_id"])
    await direct.execute("UPDATE jobs SET status = 'failed', error = 'x' WHERE id = $1", ids[2])
    seen, url = [], "/api/v3/jobs?limit=3"
    while url:
        code, page = await api.json("GET", url)
        assert code == 200, page
        assert len(page["jobs"]) <= 3
        seen += [j["job_id"] for j in page["jobs"]]
        url = page["next"]
    assert seen == sorted(ids, reverse=True)
    code, page = await api.json("GET", "/api/v3/jobs?status=failed")
    assert [j["job_id"] for j in page["jobs"]] == [ids[2]] and page["next"] is None
    code, page = await api.json("GET", "/api/v3/jobs?domain=s1.example&job_type=sitemap_scan")
    assert [j["job_id"] for j in page["jobs"]] == [i for i in reversed(ids) if (ids.index(i)) % 2]
    code, page = await api.json("GET", "/api/v3/jobs?job_type=sitemap_batch")
    assert page["jobs"] == []
