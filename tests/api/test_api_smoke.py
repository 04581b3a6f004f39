"""Submit a scan of a local site over HTTP and follow it to completion through status_url."""

from __future__ import annotations

from tests.support.sites import Site

SITEMAP = """<?xml version="1.0" encoding="UTF-8"?>
<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">
<url><loc>{base}/a</loc></url><url><loc>{base}/b</loc></url><url><loc>{base}/c</loc></url>
</urlset>"""


def add_sitemap(site: Site, count: int = 3) -> None:
    base = site.url("")
    site.add("/robots.txt", f"Sitemap: {base}/sitemap.xml\n")
    site.add("/sitemap.xml", SITEMAP.format(base=base))


async def test_submit_and_follow_to_completion(api, worker, site):
    add_sitemap(site)
    code, body = await api.json(
        "POST",
        "/api/v3/sitemap/scan",
        {"base_url": site.url("/"), "max_pages": 100, "user_id": "u1", "meta": {"ticket": 7}},
    )
    assert code == 202, body
    assert body["status"] == "pending"
    assert body["status_url"] == f"/api/v3/sitemap/status/{body['job_id']}"
    done = await api.wait_status(body["status_url"])
    assert done["status"] == "completed", done
    assert done["result"]["url_count"] == 3
    assert done["scan"]["files_done"] >= 1 and done["scan"]["urls_listed"] == 3
    assert done["meta"] == {"ticket": 7} and done["user_id"] == "u1"
    assert done["payload"]["max_urls"] == 100
    assert done["attempts"] == 1 and done["finished_at"] is not None
