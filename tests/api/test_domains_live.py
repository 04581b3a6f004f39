"""The domain endpoints over what a real worker wrote: two scans of a local site (the second
after the site changed) make a history with what changed, the current set and the changes
list; then the domain is watched. Real server, real worker, real PostgreSQL on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from tests.api.conftest import Api
from tests.support.sites import Site

NS = 'xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"'


def publish(site: Site, paths: list[str]) -> None:
    urls = "".join(f"<url><loc>{site.url(p)}</loc></url>" for p in paths)
    site.add("/robots.txt", f"Sitemap: {site.url('/sitemap.xml')}\n")
    site.add("/sitemap.xml", f'<?xml version="1.0"?><urlset {NS}>{urls}</urlset>')


async def scan(api: Api, site: Site, key: str) -> int:
    code, body = await api.json("POST", "/api/v3/sitemap/scan", {"domain": site.url("/")}, key=key)
    assert code == 202, body
    done = await api.wait_status(body["status_url"], key=key)
    assert done["status"] == "completed", done
    return int(body["job_id"])


async def test_two_real_scans_make_a_history_with_changes(
    api: Api, worker: None, site: Site, make_key: Callable[..., Awaitable[str]]
) -> None:
    key = await make_key("tenant", "acme")
    publish(site, ["/a", "/b", "/c"])
    first = await scan(api, site, key)
    publish(site, ["/b", "/c", "/d"])
    second = await scan(api, site, key)

    domain = f"127.0.0.1:{site.port}"
    code, view = await api.json("GET", f"/api/v3/domains/{domain}", key=key)
    assert code == 200, view
    assert view["domain"] == domain and view["tenant_id"] == "acme"
    assert view["last_completed_job_id"] == second and view["url_count"] == 3
    assert [s["job_id"] for s in view["scans"]] == [second, first]
    newest = view["scans"][0]
    assert (newest["added"], newest["removed"], newest["changed"]) == (1, 1, 0), newest
    assert newest["previous_job_id"] == first and newest["complete"] is True

    code, page = await api.json("GET", f"/api/v3/domains/{domain}/urls", key=key)
    assert code == 200 and page["job_id"] == second
    assert sorted(u["loc"] for u in page["urls"]) == [site.url(p) for p in ("/b", "/c", "/d")]

    code, page = await api.json("GET", f"/api/v3/domains/{domain}/changes?since={first}", key=key)
    assert code == 200, page
    found = sorted((c["change"], c["loc"]) for c in page["changes"])
    assert found == [("added", site.url("/d")), ("removed", site.url("/a"))]
    assert {c["job_id"] for c in page["changes"]} == {second}

    code, listing = await api.json("GET", "/api/v3/domains", key=key)
    assert [d["domain"] for d in listing["domains"]] == [domain]
